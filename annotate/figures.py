"""Figures of the human verification report (PNG, through the shared saver)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from quantmedic.judge.figures import plt, save_figure


def accuracy_bars(rates: Mapping, path: str | Path, title: str = "Diagnostic accuracy by category") -> Path:
    """Horizontal bars of accuracy per group with their 95% intervals (``rates``: name → Rate)."""
    names = [n for n, r in rates.items() if r.value is not None]
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * max(3, len(names)) + 1))
    values = [100 * rates[n].value for n in names]
    errors = [[100 * (rates[n].value - rates[n].low) for n in names],
              [100 * (rates[n].high - rates[n].value) for n in names]]
    ax.barh(range(len(names)), values, xerr=errors, color="#4C72B0", capsize=4)
    ax.set_yticks(range(len(names)), [f"{n} (n={rates[n].n})" for n in names])
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of verdicts whose step and category the annotators accept (95% Wilson)")
    ax.set_title(title)
    ax.invert_yaxis()
    return save_figure(fig, path)


def confusion_heatmap(table: Mapping[str, Mapping[str, int]], path: str | Path,
                      title: str = "Category: judge (rows) vs annotators (columns)") -> Path:
    rows = list(table)
    columns = sorted({c for row in table.values() for c in row})
    grid = np.array([[table[r].get(c, 0) for c in columns] for r in rows]) if rows else np.zeros((1, 1))
    fig, ax = plt.subplots(figsize=(1.2 * max(3, len(columns)) + 2, 0.7 * max(3, len(rows)) + 1.5))
    ax.imshow(grid, cmap="Greens", aspect="auto")
    for (i, j), count in np.ndenumerate(grid):
        ax.text(j, i, str(count), ha="center", va="center", color="black")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title)
    return save_figure(fig, path)
