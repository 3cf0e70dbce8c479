"""The examples in the docstrings of the metrics, medicine and training modules run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [f"quantmedic.judge.metrics.{name}" for name in
           ("_steps", "agreement", "bootstrap", "calibration", "intervals", "localization", "processbench")]
MODULES += [f"quantmedic.medicine.{name}" for name in ("contamination", "diagnoses", "pairs", "selection")]
MODULES += [f"quantmedic.pipelines.{name}" for name in ("models.continuations", "models.engines", "models.loading",
                                                         "models.quantize", "evaluation.recovery", "study.engine",
                                                         "study.config", "study.layout")]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
