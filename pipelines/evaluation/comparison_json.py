"""``comparison.json``: the paired comparison as plain JSON data (:func:`to_json`) and read back as
typed data (:class:`ComparisonSummary`: everything but the flipped attempts themselves).

Values in the file are rounded (accuracies, differences and interval ends to 6 decimals, mean
lengths to 3), so a summary read back holds the rounded values. The key ``lengths`` (reasoning
traces' length statistics, :mod:`~quantmedic.pipelines.evaluation.lengths`) is there only when
either side has thinking.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quantmedic.judge.metrics import Interval
from quantmedic.taxonomy.errors import InputError

from quantmedic.pipelines.evaluation.lengths import LengthSummary

if TYPE_CHECKING:
    from quantmedic.taxonomy.records import Attempt

    from quantmedic.pipelines.evaluation.compare import Accuracy, Comparison, GroupComparison, OutputStats

COMPARISON_JSON = "comparison.json"
CONFIDENCE = 0.95  # of the Wilson and Wald intervals in the file


# --- writing ----------------------------------------------------------------------------------------

def _interval_json(interval: Interval | None) -> list[float] | None:
    return None if interval is None else [round(interval.low, 6), round(interval.high, 6)]


def _accuracy_json(acc: Accuracy) -> dict:
    return {"correct": acc.correct, "n": acc.n, "accuracy": None if acc.value is None else round(acc.value, 6),
            "wilson95": _interval_json(acc.interval)}


def _group_json(group: GroupComparison) -> dict:
    return {"group": group.group, "full_precision": _accuracy_json(group.fp), "quantized": _accuracy_json(group.quant),
            "right_to_wrong": group.right_to_wrong, "wrong_to_right": group.wrong_to_right}


def _outputs_json(stats: OutputStats) -> dict:
    return {"n": stats.n, "mean_length": None if stats.mean_length is None else round(stats.mean_length, 3),
            "length_unit": stats.unit, "degenerate": _accuracy_json(stats.degenerate),
            "degenerate_kinds": dict(stats.degenerate_kinds)}


def _flip_json(fp: Attempt, quant: Attempt) -> dict:
    return {"problem_id": quant.problem.id, "source_id": quant.problem.source_id, "sample_index":
            quant.sampling.sample_index, "subject": quant.problem.subject, "level": quant.problem.level,
            "reference_answer": quant.problem.reference_answer, "full_precision_answer": fp.final_answer,
            "quantized_answer": quant.final_answer, "full_precision_attempt": fp.id, "quantized_attempt": quant.id}


def to_json(c: Comparison, *, flips: bool = True) -> dict:
    """The comparison as plain JSON data (flips as problem ids and answers, not whole attempts; with
    ``flips=False``, their lists are left empty)."""
    data = {
        "full_precision": {"label": c.fp_label, "attempts": c.fp_total, "unpaired": c.unpaired_fp,
                           "execution": c.fp_execution, **_accuracy_json(c.fp)},
        "quantized": {"label": c.quant_label, "attempts": c.quant_total, "unpaired": c.unpaired_quant,
                      "execution": c.quant_execution, **_accuracy_json(c.quant)},
        "pairs": {"present": c.paired, "usable": c.usable, "ungradable": c.ungradable_pairs,
                  "both_right": c.both_right, "both_wrong": c.both_wrong,
                  "right_to_wrong": len(c.right_to_wrong_pairs), "wrong_to_right": len(c.wrong_to_right_pairs)},
        "difference": None if c.difference is None else round(c.difference, 6),
        "difference_wald95": _interval_json(c.difference_interval),
        "mcnemar_exact_p": c.p_value,
        "by_subject": [_group_json(g) for g in c.by_subject],
        "by_level": [_group_json(g) for g in c.by_level],
        "outputs": {"full_precision": _outputs_json(c.fp_outputs), "quantized": _outputs_json(c.quant_outputs)},
        "right_to_wrong": [_flip_json(fp, q) for fp, q in c.right_to_wrong_pairs] if flips else [],
        "wrong_to_right": [_flip_json(fp, q) for fp, q in c.wrong_to_right_pairs] if flips else [],
    }
    if c.fp_lengths is not None and c.quant_lengths is not None:
        data["lengths"] = {"full_precision": c.fp_lengths.to_json(), "quantized": c.quant_lengths.to_json()}
    return data


def _flips_text(pairs: Iterable[tuple[Attempt, Attempt]]) -> Iterator[str]:
    """A list of flips as ``json.dumps(..., indent=2)`` writes it one level down, one flip at a time."""
    first = True
    for fp, quant in pairs:
        yield ("[\n" if first else ",\n") + textwrap.indent(json.dumps(_flip_json(fp, quant), indent=2,
                                                                     ensure_ascii=False), "    ")
        first = False
    yield "[]" if first else "\n  ]"


def json_chunks(c: Comparison) -> Iterator[str]:
    """The text of ``json.dumps(to_json(c), indent=2, ensure_ascii=False)`` and a newline, in pieces: each flip
    is rendered as it is written, so the flips are never all held as JSON data or as text."""
    data = to_json(c, flips=False)
    data.update((key, f"\0{key}\0") for key in ("right_to_wrong", "wrong_to_right"))  # placeholders, in place
    rest = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    for key, pairs in (("right_to_wrong", c.right_to_wrong_pairs), ("wrong_to_right", c.wrong_to_right_pairs)):
        head, rest = rest.split(json.dumps(f"\0{key}\0"), 1)
        yield head
        yield from _flips_text(pairs)
    yield rest


# --- reading ----------------------------------------------------------------------------------------

def _interval(value: list[float] | None) -> Interval | None:
    return None if value is None else Interval(value[0], value[1], CONFIDENCE)


@dataclass(frozen=True)
class Rate:
    """``correct`` of ``n`` (``accuracy``: their ratio, None when ``n`` is 0) with its 95% Wilson interval."""

    correct: int
    n: int
    accuracy: float | None
    wilson95: Interval | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rate:
        return cls(data["correct"], data["n"], data["accuracy"], _interval(data["wilson95"]))


@dataclass(frozen=True)
class OutputSummary:
    """One side's outputs over the present pairs: mean length (``length_unit``: tokens or words) and
    degenerate outputs (``degenerate.correct`` of them, by kind)."""

    n: int
    mean_length: float | None
    length_unit: str
    degenerate: Rate
    degenerate_kinds: tuple[tuple[str, int], ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputSummary:
        return cls(data["n"], data["mean_length"], data["length_unit"], Rate.from_json(data["degenerate"]),
                   tuple(data["degenerate_kinds"].items()))


@dataclass(frozen=True)
class SideSummary:
    """One side: its label, attempts (``unpaired`` of them had no counterpart), and its accuracy over the
    usable pairs (``correct`` of ``n``) with the 95% Wilson interval; ``lengths``: its reasoning traces'
    length statistics over the present pairs (None unless either side has thinking)."""

    label: str
    attempts: int
    unpaired: int
    correct: int
    n: int
    accuracy: float | None
    wilson95: Interval | None
    outputs: OutputSummary
    lengths: LengthSummary | None = None
    execution: str | None = None
    """``real kernels``, ``simulated``, ``mixed`` or None (not recorded; comparisons older than the field)."""


@dataclass(frozen=True)
class GroupSummary:
    """Both sides' accuracy on the usable pairs of one subject or level, and its flips."""

    group: str
    full_precision: Rate
    quantized: Rate
    right_to_wrong: int
    wrong_to_right: int


@dataclass(frozen=True)
class PairCounts:
    """Pairs present on both sides, usable (both graded), ungradable, and the four outcome cells."""

    present: int
    usable: int
    ungradable: int
    both_right: int
    both_wrong: int
    right_to_wrong: int
    wrong_to_right: int


@dataclass(frozen=True)
class ComparisonSummary:
    """``comparison.json`` as typed data; its attributes are named after the file's keys.

    ``difference`` is quantized minus full-precision accuracy on the usable pairs (None without any),
    ``difference_wald95`` its paired Wald interval, ``mcnemar_exact_p`` the exact McNemar p-value.
    """

    full_precision: SideSummary
    quantized: SideSummary
    pairs: PairCounts
    difference: float | None
    difference_wald95: Interval | None
    mcnemar_exact_p: float
    by_subject: tuple[GroupSummary, ...]
    by_level: tuple[GroupSummary, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ComparisonSummary:
        """From the data of :func:`to_json` (raises KeyError or TypeError on other data)."""
        def side(name: str) -> SideSummary:
            s = data[name]
            return SideSummary(s["label"], s["attempts"], s["unpaired"], s["correct"], s["n"], s["accuracy"],
                               _interval(s["wilson95"]), OutputSummary.from_json(data["outputs"][name]),
                               LengthSummary.from_json(data.get("lengths", {}).get(name)), s.get("execution"))

        def groups(key: str) -> tuple[GroupSummary, ...]:
            return tuple(GroupSummary(g["group"], Rate.from_json(g["full_precision"]), Rate.from_json(g["quantized"]),
                                      g["right_to_wrong"], g["wrong_to_right"]) for g in data[key])

        return cls(side("full_precision"), side("quantized"), PairCounts(**data["pairs"]), data["difference"],
                   _interval(data["difference_wald95"]), data["mcnemar_exact_p"], groups("by_subject"),
                   groups("by_level"))

    @classmethod
    def of(cls, comparison: Comparison) -> ComparisonSummary:
        """The summary of a comparison, as it reads back from its ``comparison.json``."""
        return cls.from_json(to_json(comparison))

    @classmethod
    def read(cls, path: str | Path) -> ComparisonSummary:
        """Read ``comparison.json``: the file, or the folder that holds it. Raises InputError when it is
        missing or is not a comparison."""
        path = Path(path)
        if path.is_dir():
            path = path / COMPARISON_JSON
        if not path.is_file():
            raise InputError(path, "no such file: run `quantmedic compare` first")
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (KeyError, TypeError, ValueError, IndexError) as error:  # a JSONDecodeError is a ValueError
            raise InputError(path, f"not a comparison written by `quantmedic compare` ({type(error).__name__}: "
                                   f"{error})") from None
