"""The examples in the metrics modules' docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["_steps", "agreement", "bootstrap", "calibration", "intervals", "localization", "processbench"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"quantmedic.judge.metrics.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
