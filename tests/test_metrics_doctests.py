"""The examples in the docstrings of every quantmedic module run and hold (a module with ``>>>`` in it is
found here by itself: a new module's examples are tested without being listed)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("taxonomy", "judge", "annotate", "medicine", "pipelines")


def modules_with_examples() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if ">>>" in path.read_text(encoding="utf-8") and "argilla_plugin" not in path.parts:
                parts = path.relative_to(ROOT).with_suffix("").parts
                names.append(".".join(("quantmedic", *(p for p in parts if p != "__init__"))))
    return names


MODULES = modules_with_examples()


def test_the_modules_are_found():
    assert "quantmedic.judge.thinking" in MODULES and "quantmedic.judge.metrics.intervals" in MODULES
    assert len(MODULES) >= 30


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
