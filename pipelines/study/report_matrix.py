"""The report's low-bit grid (a study with ``matrix:`` or several ``seeds:``): accuracy per cell × benchmark
over the seeds, the drop from full precision, output lengths and how the attempts were computed, and a
heat map of the drops (rows: method and rotation; columns: bits × KV cache; simulated cells hatched).

Everything is read from the generate stages' graded attempts (``generate:LABEL`` for the primary seed,
``generate:LABEL@sS`` for the others); the cells' axes come from the locked config.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from quantmedic.judge.figures import np, plt
from quantmedic.judge.metrics.intervals import wilson_interval
from quantmedic.taxonomy.jsonl import iter_json_lines, validate_record
from quantmedic.taxonomy.records import Attempt

from . import layout as L
from .layout import FULL_PRECISION, StudyFolder

SIMULATED = "simulated"
HEADERS = ["model", "benchmark", "seeds", "accuracy (mean)", "spread (sd)", "95% Wilson interval per seed",
           "drop vs full precision", "mean output tokens", "execution"]


@dataclass
class SeedRun:
    """One side's graded attempts of one seed on one benchmark."""

    seed: int
    correct: int = 0
    graded: int = 0
    tokens: list[int] = field(default_factory=list)
    execution: set = field(default_factory=set)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None


@dataclass
class Cell:
    """A side of the grid (full precision or one quantization) and its runs per benchmark."""

    label: str
    axes: tuple[str, str] | None  # (row, column) in the heat map; None: full precision
    runs: dict[str, list[SeedRun]] = field(default_factory=dict)

    def mean(self, source: str) -> float | None:
        values = [r.accuracy for r in self.runs.get(source, []) if r.accuracy is not None]
        return statistics.fmean(values) if values else None

    def simulated(self, source: str | None = None) -> bool:
        runs = self.runs.get(source, []) if source else [r for rs in self.runs.values() for r in rs]
        return any(SIMULATED in r.execution for r in runs)


def shows_grid(files: StudyFolder) -> bool:
    """Whether the study has a matrix or several seeds (its report then has the grid)."""
    config = files.lock().get("config", {})
    return bool(config.get("matrix")) or len(config.get("seeds") or []) > 1


def _axes(files: StudyFolder) -> dict[str, tuple[str, str]]:
    """Each quantization's (method + rotation, bits × KV cache), from the locked config ({} if it no longer
    validates)."""
    from .config import StudyConfig

    try:
        config = StudyConfig.model_validate(files.lock().get("config", {}))
    except (ValidationError, ValueError):
        return {}
    axes = {}
    for q in config.quantizations:
        row = q.method + (f" + {q.rotation}" if q.rotation != "none" else "")
        column = (f"W{q.bits}" if q.bits and q.method != "none" else "W16") + (f" KV {q.kv_cache}" if q.kv_cache
                                                                               else "")
        axes[q.label] = (row, column)
    return axes


def _runs(path: Path, seed: int) -> dict[str, SeedRun]:
    """A graded attempts file summed per benchmark source (streamed)."""
    runs: dict[str, SeedRun] = {}
    for line, obj in iter_json_lines(path):
        a = validate_record(Attempt, obj, path, line)
        run = runs.setdefault(a.problem.source or "benchmark", SeedRun(seed))
        if a.correct is not None:
            run.graded += 1
            run.correct += a.correct is True
        if a.completion_tokens is not None:
            run.tokens.append(a.completion_tokens)
        if a.quantization is not None and a.quantization.execution:
            run.execution.add(a.quantization.execution)
    return runs


def grid_cells(files: StudyFolder) -> list[Cell]:
    """Full precision, then every quantization, each with its finished generate stages' runs per seed."""
    primary = files.lock().get("seed", 0)
    axes = _axes(files)
    order = list(axes) + [q for q in files.quantizations() if q not in axes]
    cells = []
    for label in [FULL_PRECISION, *(q for q in order if q in files.quantizations())]:
        cell = Cell(label, axes.get(label))
        for seed, stage in sorted(files.seeds(label).items(), key=lambda item: primary if item[0] is None else item[0]):
            if path := files.output(stage, L.ATTEMPTS):
                for source, run in _runs(path, primary if seed is None else seed).items():
                    cell.runs.setdefault(source, []).append(run)
        if cell.runs:
            cells.append(cell)
    return cells


def _pts(x: float | None, sign: bool = False) -> str:
    return "–" if x is None else (f"{100 * x:+.1f} pts" if sign else f"{100 * x:.1f} pts")


def grid_rows(cells: list[Cell], fp_label: str) -> list[list]:
    """The grid table's rows: one per side × benchmark."""
    fp = next((c for c in cells if c.label == FULL_PRECISION), None)
    rows = []
    for cell in cells:
        for source, runs in sorted(cell.runs.items()):
            values = [r.accuracy for r in runs if r.accuracy is not None]
            mean = cell.mean(source)
            fp_mean = fp.mean(source) if fp else None
            intervals = []
            for r in runs:
                iv = wilson_interval(r.correct, r.graded)
                intervals.append(f"s{r.seed}: " + ("–" if iv is None else f"[{100 * iv.low:.1f}, {100 * iv.high:.1f}]"))
            tokens = [t for r in runs for t in r.tokens]
            executions = {e for r in runs for e in r.execution}
            execution = SIMULATED if SIMULATED in executions else (", ".join(sorted(executions)) or "–")
            name = fp_label if cell.label == FULL_PRECISION else cell.label + (" †" if cell.simulated(source) else "")
            drop = None if cell.label == FULL_PRECISION or mean is None or fp_mean is None else mean - fp_mean
            rows.append([name, source, " ".join(str(r.seed) for r in runs),
                         "–" if mean is None else f"{100 * mean:.1f}%",
                         _pts(statistics.stdev(values)) if len(values) > 1 else "–", "; ".join(intervals),
                         "" if cell.label == FULL_PRECISION else _pts(drop, sign=True),
                         f"{statistics.fmean(tokens):.0f}" if tokens else "–", execution])
    return rows


def drop_heatmap(cells: list[Cell], source: str):
    """The drops (points) of the cells with axes on benchmark ``source``; None when there are none."""
    fp = next((c for c in cells if c.label == FULL_PRECISION), None)
    placed = [c for c in cells if c.axes and c.mean(source) is not None]
    if not placed or fp is None or fp.mean(source) is None:
        return None
    rows = list(dict.fromkeys(c.axes[0] for c in placed))
    columns = list(dict.fromkeys(c.axes[1] for c in placed))
    values = np.full((len(rows), len(columns)), np.nan)
    for c in placed:
        values[rows.index(c.axes[0]), columns.index(c.axes[1])] = 100 * (c.mean(source) - fp.mean(source))
    fig, ax = plt.subplots(figsize=(2.4 + 1.3 * len(columns), 1.6 + 0.7 * len(rows)))
    limit = max(1.0, float(np.nanmax(np.abs(values))))
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for c in placed:
        y, x = rows.index(c.axes[0]), columns.index(c.axes[1])
        simulated = c.simulated(source)
        ax.text(x, y, f"{values[y, x]:+.1f}" + (" †" if simulated else ""), ha="center", va="center", fontsize=9,
                color="white" if abs(values[y, x]) > limit / 2 else "black")
        if simulated:
            ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="//", edgecolor="0.4", lw=0))
    ax.set_xticks(range(len(columns)), columns, rotation=20)
    ax.set_yticks(range(len(rows)), rows)
    fig.colorbar(image, ax=ax, label="points vs full precision")
    ax.set_title(f"Accuracy drop on {source} († simulated)")
    return fig


def grid_parts(files: StudyFolder, fp_label: str) -> tuple[str, list[list], list[tuple[str, object]]] | None:
    """The grid's text, table rows and heat maps (None: the study has no matrix and one seed)."""
    if not shows_grid(files):
        return None
    cells = grid_cells(files)
    sources = sorted({s for c in cells for s in c.runs})
    figures = []
    for source in sources:
        if (fig := drop_heatmap(cells, source)) is not None:
            figures.append(("grid-drops" if len(sources) == 1 else f"grid-drops-{source}", fig))
    seeds = files.lock().get("seeds") or [files.lock().get("seed", 0)]
    text = (f"Accuracy of each cell per benchmark over seeds {', '.join(map(str, seeds))}: the mean over seeds, the "
            "sample standard deviation across them (– with one seed) and a 95% Wilson interval per seed (over the "
            "graded attempts of that seed); the drop is the cell's mean minus the full-precision mean, in points; "
            "output tokens are the completions' mean. The judge, the medicine and the recovery use the primary "
            f"seed's attempts only (seed {seeds[0]}). † simulated: quantize-dequantize in a transformers forward "
            "pass — the format's numbers, not its speed or memory.")
    return text, grid_rows(cells, fp_label), figures
