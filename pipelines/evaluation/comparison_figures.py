"""The figures of a full-precision vs. quantized comparison (:mod:`quantmedic.pipelines.evaluation.compare`):
accuracy per group with 95% Wilson intervals, the flips, and (reasoning models) the thinking lengths.

matplotlib is loaded (through :mod:`quantmedic.judge.figures`) only when a figure is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quantmedic.pipelines.evaluation.compare import Comparison, GroupComparison


def _figures():
    from quantmedic.judge import figures  # matplotlib on the Agg backend, loaded only when plotting

    return figures


def accuracy_plot(c: Comparison, path: str | Path, groups: Sequence[GroupComparison] | None = None,
                  title: str = "Accuracy by subject") -> Path:
    """Horizontal bars: each side's accuracy per group (default: by subject, else overall) with 95% Wilson
    intervals."""
    figures = _figures()
    groups = list(c.by_subject if groups is None else groups) or [c.overall]
    fig, ax = figures.plt.subplots(figsize=(7.5, 0.75 * max(3, len(groups)) + 1.2))
    height = 0.38
    for offset, side, label, color in ((-height / 2, "fp", c.fp_label, "#4C72B0"),
                                       (height / 2, "quant", c.quant_label, "#DD8452")):
        accs = [getattr(g, side) for g in groups]
        values = [100 * (a.value or 0.0) for a in accs]
        errors = [[100 * (a.value - a.interval.low) if a.n else 0 for a in accs],
                  [100 * (a.interval.high - a.value) if a.n else 0 for a in accs]]
        ax.barh([i + offset for i in range(len(groups))], values, height=height, xerr=errors, capsize=3,
                color=color, label=label)
    ax.set_yticks(range(len(groups)), [f"{g.group} (n={g.fp.n})" for g in groups])
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy, % (95% Wilson interval)")
    ax.set_title(title)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    return figures.save_figure(fig, path)


def flips_plot(c: Comparison, path: str | Path) -> Path:
    """Bars of right→wrong and wrong→right pairs, overall and per subject (or level)."""
    figures = _figures()
    groups = [c.overall, *(c.by_subject or c.by_level)]
    fig, ax = figures.plt.subplots(figsize=(7.5, 0.6 * max(3, len(groups)) + 1.2))
    height = 0.38
    for offset, attr, label, color in ((-height / 2, "right_to_wrong", "right → wrong", "#C44E52"),
                                       (height / 2, "wrong_to_right", "wrong → right", "#55A868")):
        counts = [getattr(g, attr) for g in groups]
        bars = ax.barh([i + offset for i in range(len(groups))], counts, height=height, color=color, label=label)
        ax.bar_label(bars, fontsize=7, padding=2)
    ax.set_yticks(range(len(groups)), [g.group for g in groups])
    ax.set_xlabel("pairs")
    ax.set_title(f"Flips from {c.fp_label} to {c.quant_label} (McNemar p = {c.p_value:.3g})")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    return figures.save_figure(fig, path)


def lengths_plot(c: Comparison, fp: Sequence[tuple[int, bool | None]], quant: Sequence[tuple[int, bool | None]],
                 path: str | Path) -> Path:
    """Thinking tokens of both sides over the present pairs: their distributions (left) and by outcome (right).
    ``fp`` and ``quant``: ``(thinking tokens, correct)`` of each side's present attempts that have thinking."""
    figures = _figures()
    sides = [(c.fp_label, "#4C72B0", fp), (c.quant_label, "#DD8452", quant)]
    fig, (left, right) = figures.plt.subplots(1, 2, figsize=(11, 4.2))
    values = [t for _, _, rows in sides for t, _ in rows]
    bins = figures.np.linspace(0, max(values) if values else 1, 31)
    boxes, names, colors = [], [], []
    for label, color, rows in sides:
        if not rows:
            left.plot([], [], color=color, label=f"{label}: no thinking")
            continue
        tokens = [t for t, _ in rows]
        left.hist(tokens, bins=bins, histtype="step", linewidth=1.8, color=color, label=f"{label} (n={len(rows)})")
        left.axvline(sum(tokens) / len(tokens), color=color, linestyle="--", linewidth=1)
        for outcome, name in ((True, "right"), (False, "wrong")):
            if group := [t for t, correct in rows if correct is outcome]:
                boxes.append(group)
                names.append(f"{label}\n{name} (n={len(group)})")
                colors.append(color)
    left.set_xlabel("thinking tokens (dashed: mean)")
    left.set_ylabel("traces")
    left.set_title("Thinking length")
    left.legend(fontsize=8)
    if boxes:
        parts = right.boxplot(boxes, patch_artist=True, showmeans=True)
        for box, color in zip(parts["boxes"], colors):
            box.set_facecolor(color)
            box.set_alpha(0.5)
        right.set_xticks(range(1, len(boxes) + 1), names, fontsize=7)
    right.set_ylabel("thinking tokens")
    right.set_title("Thinking length by outcome (triangle: mean)")
    return figures.save_figure(fig, path)
