"""Figures saved as PNG (matplotlib, Agg backend: no display needed): the one saver every figure goes
through, and the judge meta-evaluation's step confusion and reliability diagrams."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from quantmedic.judge.meta_eval import JudgeScore, Prediction  # noqa: E402


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, save as PNG (120 dpi) and close a figure."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def step_confusion_plot(labels: Sequence[int], predictions: Mapping[str, Sequence[Prediction]], path: str | Path,
                        max_step: int = 12) -> Path:
    """Predicted vs. true first wrong step, one heat map per judge.

    Rows are the human label (``none`` = no wrong step), columns the judge's step; steps past
    ``max_step`` share the last row/column; ``unscored`` is its own column. Counts are printed.
    """
    steps = ["none", *[str(i) for i in range(max_step)], f"≥{max_step}"]
    columns = [*steps, "unscored"]

    def row(step: int) -> int:
        return 0 if step == -1 else 1 + min(step, max_step)

    names = list(predictions)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 5), squeeze=False)
    for ax, name in zip(axes[0], names):
        grid = np.zeros((len(steps), len(columns)), dtype=int)
        for label, p in zip(labels, predictions[name]):
            grid[row(label), len(columns) - 1 if p.step is None else row(p.step)] += 1
        used_rows = [i for i in range(len(steps)) if grid[i].any()] or [0]
        used_cols = [j for j in range(len(columns)) if grid[:, j].any() or j < len(steps) and j in used_rows] or [0]
        shown = grid[np.ix_(used_rows, used_cols)]
        ax.imshow(shown, cmap="Blues", aspect="auto")
        for (i, j), count in np.ndenumerate(shown):
            if count:
                ax.text(j, i, str(count), ha="center", va="center",
                        color="white" if count > shown.max() / 2 else "black", fontsize=8)
        ax.set_xticks(range(len(used_cols)), [columns[j] for j in used_cols], rotation=45)
        ax.set_yticks(range(len(used_rows)), [steps[i] for i in used_rows])
        ax.set_xlabel("judge's first wrong step")
        ax.set_ylabel("human label")
        exact = sum(p.step == label for label, p in zip(labels, predictions[name]))
        ax.set_title(f"{name}: {exact}/{len(labels)} exact")
    return save_figure(fig, path)


def reliability_plot(scores: Sequence[JudgeScore], path: str | Path) -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, one line per judge."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for s in scores:
        bins = [b for b in s.calibration if b.count]
        if bins:
            ece = "–" if s.ece is None else f"{s.ece:.3f}"
            ax.plot([b.mean_confidence for b in bins], [b.accuracy for b in bins], marker="o",
                    label=f"{s.name} (ECE {ece})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("stated confidence")
    ax.set_ylabel("accuracy (step exactly right)")
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


