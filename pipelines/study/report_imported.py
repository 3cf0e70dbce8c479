"""What the study report shows of stages that were not run: their reasons, and the accuracy of a side whose
attempts were imported (``quantizations[].attempts``) when no full-precision side was there to compare with."""

from __future__ import annotations

from typing import NamedTuple

from quantmedic.judge.metrics.intervals import wilson_interval
from quantmedic.pipelines.evaluation.lengths import LengthSummary
from quantmedic.taxonomy.jsonl import iter_json_lines, validate_record
from quantmedic.taxonomy.records import Attempt

from . import layout as L
from .layout import StudyFolder, stage_name as S


def skipped_rows(files: StudyFolder) -> list[list[str]]:
    """``[stage, reason]`` for each stage the study recorded as skipped."""
    return [[name, reason] for name, reason in sorted(files.skipped().items())]


class Uncompared(NamedTuple):
    """A quantization whose compare stage was skipped, summarised from its graded attempts."""

    label: str
    accuracy: float | None
    interval: list[float] | None
    graded: int
    lengths: LengthSummary | None


def uncompared(files: StudyFolder) -> list[Uncompared]:
    """Each quantization whose compare stage was skipped: its accuracy with a 95% Wilson interval (ungradable
    attempts left out) and its lengths (None without reasoning traces), from its graded attempts, streamed."""
    rows = []
    for q in files.quantizations():
        path = files.output(S("generate", q), L.ATTEMPTS) if S("compare", q) in files.skipped() else None
        if path is None:
            continue
        attempts = lambda: (validate_record(Attempt, obj, path, line) for line, obj in iter_json_lines(path))  # noqa: E731
        graded = [a.correct for a in attempts() if a.correct is not None]
        interval = wilson_interval(sum(graded), len(graded)) if graded else None
        lengths = LengthSummary.of(attempts())
        rows.append(Uncompared(q, sum(graded) / len(graded) if graded else None,
                               None if interval is None else [interval.low, interval.high], len(graded),
                               lengths if lengths.has_thinking else None))
    return rows
