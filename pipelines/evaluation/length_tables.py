"""The length statistics of :mod:`~quantmedic.pipelines.evaluation.lengths` as a table, for
``comparison.md`` and the study report: one row per side and outcome (all, right, wrong)."""

from __future__ import annotations

from collections.abc import Sequence

from quantmedic.judge.step_format import CHARS_PER_TOKEN

from quantmedic.pipelines.evaluation.lengths import Distribution, LengthStats, LengthSummary

LENGTH_HEADERS = ["model", "answers", "attempts", "accuracy", "with thinking", "thinking tokens: mean [95% t] (median)",
                  "solution tokens: mean [95% t] (median)", "sections per trace (median)", "truncated [95% Wilson]",
                  "reflections per 1k thinking tokens [95% t]"]

Side = tuple[str, str, LengthSummary | None]
"""A side of the table: its label, its accuracy as text, its lengths (None: no thinking anywhere)."""


def _dist(d: Distribution | None, digits: int = 0) -> str:
    if d is None:
        return "–"
    interval = "" if d.t95 is None else f" [{d.t95.low:.{digits}f}, {d.t95.high:.{digits}f}]"
    return f"{d.mean:.{digits}f}{interval} ({d.median:.{digits}f})"


def _truncated(s: LengthStats) -> str:
    if s.truncated_share is None:
        return "–"
    w = s.truncated_wilson95
    return f"{100 * s.truncated_share:.1f}% [{100 * w.low:.1f}, {100 * w.high:.1f}] ({s.truncated}/{s.thinking})"  # type: ignore[union-attr]


def _row(label: str, answers: str, accuracy: str, s: LengthStats) -> list[str]:
    sections = "–" if s.sections is None else f"{s.sections.mean:.1f} ({s.sections.median:g})"
    return [label, answers, str(s.attempts), accuracy, str(s.thinking), _dist(s.thinking_tokens),
            _dist(s.solution_tokens), sections, _truncated(s), _dist(s.reflections_per_1k, 2)]


def length_rows(sides: Sequence[Side]) -> list[list[str]]:
    """Per side with lengths: the rows of all its attempts, its right ones and its wrong ones."""
    rows = []
    for label, accuracy, summary in sides:
        if summary is not None:
            rows += [_row(label, "all", accuracy, summary.all), _row(label, "right", "", summary.right),
                     _row(label, "wrong", "", summary.wrong)]
    return rows


def estimate_notes(sides: Sequence[Side]) -> list[str]:
    """One sentence per side whose token counts are partly estimated from characters."""
    notes = []
    for label, _, summary in sides:
        for what, d in (("thinking", summary and summary.all.thinking_tokens),
                        ("solution", summary and summary.all.solution_tokens)):
            if d and d.estimated:
                notes.append(f"{label}: {what} tokens of {d.estimated} of {d.n} attempts are estimated from their "
                             f"characters ({CHARS_PER_TOKEN} per token), not counted.")
    return notes


def lengths_markdown(sides: Sequence[Side]) -> list[str]:
    """The ``## Lengths`` section of a Markdown report (nothing when no side has lengths)."""
    rows = length_rows(sides)
    if not rows:
        return []
    lines = ["## Lengths", "", "Reasoning traces: tokens of thinking and of solution (mean with its 95% Student-t "
             "interval, median in parentheses), sections per trace, traces cut before the end of their thinking, "
             "and reflections ('wait', 'hmm', 'let me check', 'alternatively', ...) per 1,000 thinking tokens. "
             "A truncated trace wrote no solution (nor a final answer) and is not in the solution tokens.", "",
             "| " + " | ".join(LENGTH_HEADERS) + " |", "|" + "---|" * len(LENGTH_HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    notes = estimate_notes(sides)
    return [*lines, "", *([" ".join(notes), ""] if notes else [])]
