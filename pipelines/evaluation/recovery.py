"""How much of the accuracy lost to quantization an adapter wins back (``quantmedic evaluate``).

Three sets of graded attempts pair by problem and sample index: the full-precision model, the
quantized model before treatment and after it (with the adapter). Only problems present and
gradable in all three count, and problems that are in the medicine are left out (the measurement
must be on problems the adapter was not trained on; their number is reported).

``recovered share = (after − before) / (full − before)``, with a paired percentile-bootstrap interval
over the problems (resamples where nothing was lost are undefined and dropped; their share is
reported). The gain ``after − before`` gets a paired Wald interval and McNemar's exact test.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from quantmedic.judge.metrics import Interval
from quantmedic.judge.metrics.bootstrap import percentile_interval, resample_indices
from quantmedic.medicine.contamination import problem_key
from quantmedic.taxonomy.jsonl import write_atomic
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.records import Attempt, Verdict

from quantmedic.pipelines.evaluation.compare import (Accuracy, PairKey, mcnemar_exact, pair_key,
                                                    paired_difference_interval)

# the files :func:`write_recovery` writes
RECOVERY_JSON = "recovery.json"
RECOVERY_MD = "recovery.md"
RECOVERY_PNG = "recovery.png"


@dataclass(frozen=True)
class CategoryShift:
    """One error category's share of the diagnosed failures before and after treatment."""

    category: str
    before: int
    after: int
    before_share: float | None
    after_share: float | None


@dataclass(frozen=True)
class Recovery:
    """Accuracy before and after treatment against full precision, on the same problems."""

    full_label: str
    before_label: str
    after_label: str
    n: int
    excluded_medicine: int
    unpaired: int
    full: Accuracy
    before: Accuracy
    after: Accuracy
    fixed: int  # wrong before, right after
    broken: int  # right before, wrong after
    gain_interval: Interval | None
    p_value: float
    recovered_share: float | None
    recovered_interval: Interval | None
    undefined_resamples: float
    categories: tuple[CategoryShift, ...] = ()

    @property
    def lost(self) -> float | None:
        return None if not self.n else (self.full.correct - self.before.correct) / self.n

    @property
    def gain(self) -> float | None:
        return None if not self.n else (self.after.correct - self.before.correct) / self.n


def recovered_share(full: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Row-wise (after − before) / (full − before) of 0/1 outcome matrices; NaN where nothing was lost.

    >>> recovered_share(np.array([[1, 1, 1, 0]]), np.array([[1, 0, 0, 0]]), np.array([[1, 1, 0, 0]])).tolist()
    [0.5]
    """
    lost = full.sum(axis=-1) - before.sum(axis=-1)
    gained = after.sum(axis=-1) - before.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lost > 0, gained / np.where(lost > 0, lost, 1), np.nan)


def _index(attempts: Iterable[Attempt]) -> dict[PairKey, Attempt]:
    return {pair_key(a): a for a in attempts}


def _label(attempts: Sequence[Attempt]) -> str:
    models = sorted({a.model for a in attempts})
    return "+".join(models) if len(models) <= 2 else f"{models[0]} (+{len(models) - 1})"


def category_shift(verdicts_before: Sequence[Verdict], verdicts_after: Sequence[Verdict],
                   before_ids: set[str], after_ids: set[str]) -> tuple[CategoryShift, ...]:
    """The error-category mix of the scored verdicts on the measured failures, before vs after."""
    def mix(verdicts: Sequence[Verdict], ids: set[str]) -> Counter:
        return Counter(v.category for v in verdicts if v.is_diagnosis and v.attempt.id in ids and v.category)

    a, b = mix(verdicts_before, before_ids), mix(verdicts_after, after_ids)
    ta, tb = sum(a.values()), sum(b.values())
    return tuple(CategoryShift(c, a[c], b[c], a[c] / ta if ta else None, b[c] / tb if tb else None)
                 for c in sorted(set(a) | set(b), key=lambda c: (-a[c] - b[c], c)))


def evaluate_recovery(full: Sequence[Attempt], before: Sequence[Attempt], after: Sequence[Attempt], *,
                      medicine_keys: Iterable[str] = (), verdicts_before: Sequence[Verdict] = (),
                      verdicts_after: Sequence[Verdict] = (), n_resamples: int = 4000, seed: int = 0,
                      confidence: float = 0.95) -> Recovery:
    """The recovery of ``after`` over ``before`` toward ``full``, on their shared gradable problems."""
    fi, bi, ai = _index(full), _index(before), _index(after)
    shared = sorted(set(fi) & set(bi) & set(ai))
    unpaired = len(set(fi) | set(bi) | set(ai)) - len(shared)
    treated = set(medicine_keys)
    kept, excluded = [], 0
    for key in shared:
        if problem_key(bi[key].problem) in treated:
            excluded += 1
        elif all(x[key].correct is not None for x in (fi, bi, ai)):
            kept.append(key)
    f = np.array([fi[k].correct for k in kept], dtype=int)
    b = np.array([bi[k].correct for k in kept], dtype=int)
    a = np.array([ai[k].correct for k in kept], dtype=int)
    n = len(kept)
    fixed, broken = int(((b == 0) & (a == 1)).sum()), int(((b == 1) & (a == 0)).sum())
    share = interval = None
    undefined = 1.0
    if n:
        share = float(recovered_share(f, b, a)) if f.sum() > b.sum() else None
        rows = resample_indices(n, n_resamples, seed)
        stats = recovered_share(f[rows], b[rows], a[rows])
        undefined = float(np.isnan(stats).mean())
        interval = percentile_interval(stats, confidence) if share is not None else None
    wrong_before = {bi[k].id for k in kept if not bi[k].correct}
    wrong_after = {ai[k].id for k in kept if not ai[k].correct}
    return Recovery(
        full_label=_label(full), before_label=_label(before), after_label=_label(after), n=n,
        excluded_medicine=excluded, unpaired=unpaired, full=Accuracy(int(f.sum()), n), before=Accuracy(int(b.sum()), n),
        after=Accuracy(int(a.sum()), n), fixed=fixed, broken=broken,
        gain_interval=paired_difference_interval(broken, fixed, n, confidence),
        p_value=mcnemar_exact(broken, fixed), recovered_share=share, recovered_interval=interval,
        undefined_resamples=undefined,
        categories=category_shift(verdicts_before, verdicts_after, wrong_before, wrong_after))


# --- output ---

def _iv(interval: Interval | None) -> list[float] | None:
    return None if interval is None else [interval.low, interval.high]


def to_json(r: Recovery) -> dict:
    acc = lambda x: {"correct": x.correct, "n": x.n, "accuracy": x.value, "interval": _iv(x.interval)}
    return {
        "full": {"label": r.full_label, **acc(r.full)}, "before": {"label": r.before_label, **acc(r.before)},
        "after": {"label": r.after_label, **acc(r.after)}, "problems": r.n,
        "excluded_in_medicine": r.excluded_medicine, "unpaired": r.unpaired, "lost": r.lost, "gain": r.gain,
        "gain_interval": _iv(r.gain_interval), "fixed": r.fixed, "broken": r.broken, "mcnemar_p": r.p_value,
        "recovered_share": r.recovered_share, "recovered_interval": _iv(r.recovered_interval),
        "undefined_resamples": r.undefined_resamples,
        "categories": [vars(c) for c in r.categories],
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _acc(x: Accuracy) -> str:
    i = x.interval
    return f"{_pct(x.value)} ({x.correct}/{x.n})" + (f" [{_pct(i.low)}, {_pct(i.high)}]" if i else "")


def to_markdown(r: Recovery) -> str:
    lines = ["# Recovery after treatment", "",
             f"{r.n} problems present and gradable in all three sets; {r.excluded_medicine} left out because they "
             f"are in the medicine; {r.unpaired} unpaired.", "",
             "| model | accuracy [95% Wilson] |", "|---|---|",
             f"| full precision: {r.full_label} | {_acc(r.full)} |",
             f"| quantized, before: {r.before_label} | {_acc(r.before)} |",
             f"| quantized, after: {r.after_label} | {_acc(r.after)} |", "",
             f"- lost to quantization: {_pct(r.lost)}; won back: {_pct(r.gain)}"
             + (f" [{_pct(r.gain_interval.low)}, {_pct(r.gain_interval.high)}]" if r.gain_interval else "")
             + f" ({r.fixed} fixed, {r.broken} broken; McNemar exact p = {r.p_value:.3g})",
             "- **recovered share of the lost accuracy: "
             + (f"{_pct(r.recovered_share)}** [{_pct(r.recovered_interval.low)}, {_pct(r.recovered_interval.high)}] "
                f"(paired bootstrap; {100 * r.undefined_resamples:.1f}% of resamples lost nothing and were dropped)"
                if r.recovered_share is not None and r.recovered_interval else
                "undefined** (the quantized model lost no accuracy on these problems)")]
    if r.categories:
        lines += ["", "## Error categories of the remaining failures (scored verdicts)", "",
                  "| category | before | after | share before | share after |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {c.category} | {c.before} | {c.after} | {_pct(c.before_share)} | {_pct(c.after_share)} |"
                  for c in r.categories]
    return "\n".join(lines) + "\n"


def recovery_plot(r: Recovery, path: str | Path) -> Path:
    """Accuracy of the three models with their Wilson intervals."""
    from quantmedic.judge.figures import plt, save_figure

    rows = [("full precision", r.full), ("quantized", r.before), ("quantized + adapter", r.after)]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, (name, acc) in enumerate(rows):
        value = acc.value or 0.0
        interval = acc.interval
        err = [[value - interval.low], [interval.high - value]] if interval else None
        ax.bar(i, value, yerr=err, capsize=5, color=("tab:blue", "tab:red", "tab:green")[i])
        ax.text(i, value / 2, _pct(acc.value), ha="center", color="white", fontsize=9)
    ax.set_xticks(range(3), [name for name, _ in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    title = "recovered: " + (_pct(r.recovered_share) if r.recovered_share is not None else "undefined")
    ax.set_title(f"{r.n} problems; {title}")
    return save_figure(fig, path)


def write_recovery(result: Recovery, out: Path) -> tuple[str, list[str]]:
    """Write ``recovery.json``, ``recovery.md`` and ``recovery.png`` into the folder ``out``; returns the
    Markdown and the names of the files written."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / RECOVERY_JSON, [json.dumps(to_json(result), indent=2) + "\n"])
    markdown = to_markdown(result)
    write_atomic(out / RECOVERY_MD, [markdown])
    recovery_plot(result, out / RECOVERY_PNG)
    return markdown, [RECOVERY_JSON, RECOVERY_MD, RECOVERY_PNG]


class _Read(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class SideRead(_Read):
    label: str
    correct: int
    n: int
    accuracy: float | None
    interval: tuple[float, float] | None


class ShiftRead(_Read):
    category: str
    before: int
    after: int
    before_share: float | None
    after_share: float | None


class RecoverySummary(_Read):
    """``recovery.json`` read back as typed data (what the study report shows)."""

    full: SideRead
    before: SideRead
    after: SideRead
    problems: int
    excluded_in_medicine: int
    recovered_share: float | None
    recovered_interval: tuple[float, float] | None
    categories: tuple[ShiftRead, ...] = ()

    @classmethod
    def read(cls, path: Path) -> RecoverySummary:
        """From ``recovery.json`` or the folder holding it; a bad file is an InputError."""
        path = path / RECOVERY_JSON if path.is_dir() else path
        try:
            return cls.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as error:
            raise InputError(path, f"not a readable recovery.json ({str(error).splitlines()[0]})") from None
