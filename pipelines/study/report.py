"""``quantmedic report STUDY_DIR``: a self-contained HTML report (and Markdown) of a study.

Sections: for a study with a matrix or several seeds, the low-bit grid (:mod:`.report_matrix`); accuracy of
each model with intervals and the drop; the flips; the error-category mix per model (stacked bars), a radar
chart per model size, and the mix by deciding layer (:mod:`.report_layers`); where the first wrong step falls;
for reasoning models (only when there are traces), their lengths and the error mix by position in the
thinking; the judge's meta-evaluation and its human-verified diagnostic accuracy (also by layer); the
medicine's make-up; the accuracy recovered. Every figure is also a PNG under ``figures/`` and every table a
CSV under ``tables/``; the HTML embeds the figures as data URIs, so it renders offline.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from quantmedic.annotate.report import diagnostic_report
from quantmedic.judge.figures import np, plt, save_figure
from quantmedic.medicine.build import read_report
from quantmedic.pipelines.evaluation.compare import LENGTHS_PNG, SIMULATED_NOTE, simulated_mark
from quantmedic.pipelines.evaluation.comparison_json import ComparisonSummary
from quantmedic.pipelines.evaluation.length_tables import LENGTH_HEADERS, estimate_notes, length_rows
from quantmedic.pipelines.evaluation.section_positions import POSITION_HEADERS, SectionPositionMix
from quantmedic.pipelines.evaluation.recovery import RecoverySummary
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.outputs import check_output_folder
from quantmedic.taxonomy.jsonl import read_records, write_atomic
from quantmedic.taxonomy.model import load_taxonomy
from quantmedic.taxonomy.records import Review, Verdict

from . import layout as L, report_layers as layers
from .layout import STATE, StudyFolder, stage_name as S
from .report_imported import skipped_rows, uncompared
from .report_layers import interval as _iv, pct as _pct
from .report_matrix import HEADERS as GRID_HEADERS, grid_parts

SECTIONS = ("skipped", "grid", "accuracy", "flips", "categories", "positions", "lengths", "judge", "medicine", "recovery")


@dataclass
class Table:
    name: str
    headers: list[str]
    rows: list[list]

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.headers)
        writer.writerows(self.rows)
        return buffer.getvalue()


@dataclass
class Section:
    id: str
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


class StudyFiles(StudyFolder):
    """A finished (or partly finished) study folder, read for the report."""

    def __init__(self, root: Path):
        if not (Path(root) / STATE).is_file():
            raise InputError(root, "is not a study folder (no state.json): run `quantmedic run STUDY.yaml` first",
                             usage=True)
        super().__init__(root)
        self.locked = self.lock()
        self.verdicts: dict[str, list[Verdict]] | None = None

    def comparison(self, q: str) -> ComparisonSummary | None:
        path = self.output(S("compare", q), L.COMPARISON)
        return ComparisonSummary.read(path) if path else None

    def recovery(self, q: str) -> RecoverySummary | None:
        path = self.output(S("evaluate", q), L.RECOVERY)
        return RecoverySummary.read(path) if path else None


def _pair(interval) -> list[float] | None:
    return None if interval is None else [interval.low, interval.high]


def accuracy_section(files: StudyFiles) -> Section:
    rows, drops = [], []
    for q in files.quantizations():
        c = files.comparison(q)
        if not c:
            continue
        fp, quant = c.full_precision, c.quantized
        if not rows:
            rows.append([fp.label, "full precision", fp.accuracy, _pair(fp.wilson95), fp.n, None])
        rows.append([q + simulated_mark(quant.execution), "quantized", quant.accuracy, _pair(quant.wilson95), quant.n, c.difference])
        drops.append((q, c))
    for side in uncompared(files):  # imported, with no full precision to compare with
        rows.append([side.label, "quantized (not compared)", side.accuracy, side.interval, side.graded, None])
    table = Table("accuracy", ["model", "kind", "accuracy", "95% Wilson interval", "problems", "drop vs full precision"],
                  [[m, k, _pct(a), _iv(i), n, "" if d is None else f"{100 * d:+.1f} pts"] for m, k, a, i, n, d in rows])
    figure = None
    if rows:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        values = [r[2] or 0 for r in rows]
        errors = np.array([[v - (r[3] or [v, v])[0], (r[3] or [v, v])[1] - v] for v, r in zip(values, rows)]).T
        ax.bar(range(len(rows)), values, yerr=errors, capsize=5, color=["tab:blue" if r[1] == "full precision" else "tab:red" for r in rows])
        ax.set_xticks(range(len(rows)), [r[0] for r in rows], rotation=15)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title("Accuracy with 95% Wilson intervals")
        figure = ("accuracy", fig)
    text = "; ".join(f"{q}: {100 * c.difference:+.1f} points, paired interval {_iv(_pair(c.difference_wald95))}, "
                     f"McNemar p = {c.mcnemar_exact_p:.3g}" for q, c in drops if c.difference is not None)
    text += ("; " if text else "") + SIMULATED_NOTE if any(simulated_mark(c.quantized.execution) for _, c in drops) else ""
    return Section("accuracy", "Accuracy and the drop from quantization", text, [table], [figure] if figure else [])


def grid_section(files: StudyFiles) -> Section | None:
    """The low-bit grid: every cell × benchmark over the seeds, and the heat map of the drops (None: the study
    has no matrix and one seed)."""
    fp_label = files.locked.get("config", {}).get("model", {}).get("label") or "full precision"
    parts = grid_parts(files, fp_label)
    if parts is None:
        return None
    text, rows, figures = parts
    return Section("grid", "Low-bit grid", text, [Table("grid", GRID_HEADERS, rows)], figures)


def flips_section(files: StudyFiles) -> Section:
    rows, figures = [], []
    for q in files.quantizations():
        c = files.comparison(q)
        if c:
            p = c.pairs
            rows.append([q, p.right_to_wrong, p.wrong_to_right, p.both_right, p.both_wrong])
            if flips := files.output(S("compare", q), L.FLIPS_PNG):
                figures.append((f"flips-{q}", flips))
    return Section("flips", "Flips: problems that changed outcome", "right → wrong are the failures the judge "
                   "diagnoses.", [Table("flips", ["quantization", "right → wrong", "wrong → right", "both right",
                                                  "both wrong"], rows)], figures)


def _verdicts(files: StudyFiles) -> dict[str, list[Verdict]]:
    """The judge's verdicts per quantization (read once per report)."""
    if files.verdicts is None:
        files.verdicts = {}
        for q in files.quantizations():
            if path := files.output(S("judge", q), L.VERDICTS):
                files.verdicts[q] = read_records(path, Verdict)
    return files.verdicts


def _taxonomy_categories(files: StudyFiles) -> list[str]:
    try:
        return list(load_taxonomy(files.locked.get("config", {}).get("taxonomy")).category_ids)
    except (InputError, OSError):
        return []


def categories_section(files: StudyFiles) -> Section:
    verdicts = _verdicts(files)
    mix = {q: Counter(v.category for v in vs if v.is_diagnosis and v.category) for q, vs in verdicts.items()}
    categories = sorted({c for counts in mix.values() for c in counts})
    rows = [[q, sum(counts.values()), *(counts[c] for c in categories)] for q, counts in mix.items()]
    unscored = {q: sum(not v.is_diagnosis for v in vs) for q, vs in verdicts.items()}
    figures = []
    if categories:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        bottom = np.zeros(len(mix))
        for c in categories:
            shares = np.array([counts[c] / max(sum(counts.values()), 1) for counts in mix.values()])
            ax.bar(list(mix), shares, bottom=bottom, label=c)
            bottom += shares
        ax.set_ylabel("share of diagnosed failures")
        ax.legend(fontsize=8)
        ax.set_title("Error-category mix per model")
        figures.append(("categories", fig))
        size = files.locked.get("config", {}).get("model", {}).get("size") or "one size"
        axes = list(dict.fromkeys([*_taxonomy_categories(files), *categories]))  # every category, seen or not
        angles = np.linspace(0, 2 * np.pi, len(axes), endpoint=False).tolist()
        fig = plt.figure(figsize=(4.8, 4.8))
        ax = fig.add_subplot(projection="polar")
        for q, counts in mix.items():
            values = [counts[c] / max(sum(counts.values()), 1) for c in axes]
            ax.plot(angles + angles[:1], values + values[:1], label=q)
            ax.fill(angles + angles[:1], values + values[:1], alpha=0.15)
        ax.set_xticks(angles, axes)
        ax.set_title(f"Error categories, model size {size}")
        ax.legend(fontsize=8, loc="lower right")
        figures.append((f"radar-{size}", fig))
    text = ", ".join(f"{q}: {n} unscored" for q, n in unscored.items() if n)
    text = " ".join(filter(None, (text and text + " (not counted).", layers.layer_text(verdicts))))
    return Section("categories", "Error categories per model", text,
                   [Table("categories", ["model", "diagnosed", *categories], rows), Table(*layers.layer_mix(verdicts))],
                   figures)


def positions_section(files: StudyFiles) -> Section:
    rows, relative = [], defaultdict(list)
    for q, vs in _verdicts(files).items():
        for v in vs:
            if v.is_diagnosis and v.first_wrong_step is not None and v.first_wrong_step >= 0:
                n = len(v.attempt.steps)
                relative[q].append(v.first_wrong_step / max(n - 1, 1))
                rows.append([q, v.attempt.id, v.first_wrong_step, n])
    figures = []
    if relative:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        ax.hist(list(relative.values()), bins=np.linspace(0, 1, 11), label=list(relative), stacked=False)
        ax.set_xlabel("first wrong step, relative position in the solution (0 = first step, 1 = last)")
        ax.set_ylabel("failures")
        ax.legend(fontsize=8)
        ax.set_title("Where the first wrong step falls")
        figures.append(("positions", fig))
    early = {q: sum(x <= 0.34 for x in xs) / len(xs) for q, xs in relative.items() if xs}
    text = "; ".join(f"{q}: {_pct(share)} of failures go wrong in the first third" for q, share in early.items())
    return Section("positions", "Where failures start", text,
                   [Table("first_wrong_steps", ["model", "attempt", "first wrong step", "steps"], rows)], figures)


def lengths_section(files: StudyFiles) -> Section | None:
    """Reasoning traces' lengths per model and the error mix by position in the thinking (None: no traces)."""
    sides, figures = [], []
    for q in files.quantizations():
        c = files.comparison(q)
        if c and c.quantized.lengths is not None:
            if not sides:
                sides.append((c.full_precision.label, _pct(c.full_precision.accuracy), c.full_precision.lengths))
            sides.append((q, _pct(c.quantized.accuracy), c.quantized.lengths))
            if figure := files.output(S("compare", q), LENGTHS_PNG):
                figures.append((f"lengths-{q}", figure))
    sides += [(side.label, _pct(side.accuracy), side.lengths) for side in uncompared(files) if side.lengths]
    mixes = {q: SectionPositionMix.of(vs) for q, vs in _verdicts(files).items()}
    positions = [[q, *row] for q, mix in mixes.items() if mix.all.total for row in mix.table()[1]]
    if not sides and not positions:
        return None
    text = ("Lengths over the compare stage's present pairs (a side not compared: all its attempts); means with 95% Student-t intervals, medians in "
            "parentheses. The error mix by position: the first wrong section of the thinking the judge found, at "
            "section index / sections, in quarters of the trace. " + " ".join(estimate_notes(sides)))
    return Section("lengths", "Reasoning: lengths and where the thinking goes wrong", text.strip(),
                   [Table("lengths", LENGTH_HEADERS, length_rows(sides)),
                    Table("section_positions", ["quantization", *POSITION_HEADERS], positions)], figures)


def _markdown_table(markdown: str) -> Table | None:
    lines = [l for l in markdown.splitlines() if l.startswith("|")]
    if len(lines) < 2:
        return None
    cells = lambda l: [c.strip() for c in l.strip().strip("|").split("|")]  # noqa: E731
    return Table("judge_meta_evaluation", cells(lines[0]), [cells(l) for l in lines[2:]])


def judge_section(files: StudyFiles) -> Section:
    tables, figures, text = [], [], []
    summary = files.output(S("judge-eval"), L.JUDGE_EVAL_SUMMARY)
    if summary:
        table = _markdown_table(summary.read_text(encoding="utf-8").split("\n\n## ")[0])
        if table:
            tables.append(table)
        for name, file in L.JUDGE_EVAL_FIGURES.items():
            if figure := files.output(S("judge-eval"), file):
                figures.append((f"judge-{name}", figure))
        text.append("Judge meta-evaluation on ProcessBench's human step labels (GSM8K split).")
    else:
        text.append("No judge meta-evaluation in this study (set judge.eval_limit).")
    rows, by_layer = [], []
    for q in files.quantizations():
        if path := files.output(S("review", q), L.REVIEWS):
            reviews = read_records(path, Review)
            if reviews:
                r = diagnostic_report(reviews, _verdicts(files).get(q))
                a, by_layer = r.diagnostic_accuracy, by_layer + layers.accuracy_rows(q, r)
                rows.append([q, r.verdicts, r.reviews, _pct(a.value), _iv((a.low, a.high) if a.value is not None
                                                                          else None), _pct(r.step_exact.value)])
    tables += [Table("diagnostic_accuracy", ["quantization", "verdicts reviewed", "reviews", "diagnostic accuracy",
                                             "95% Wilson interval", "step exact"], rows),
               Table("diagnostic_accuracy_by_layer", layers.ACCURACY_HEADERS, by_layer)]
    if not rows:
        text.append("No human reviews in this study.")
    return Section("judge", "The judge: meta-evaluation and human-verified diagnostic accuracy", " ".join(text),
                   tables, figures)


def medicine_section(files: StudyFiles) -> Section:
    rows, sources, by_layer = [], [], []
    for q in files.quantizations():
        if files.output(S("medicine", q), L.MEDICINE_REPORT):
            report = read_report(files.finished(S("medicine", q)) / L.MEDICINE)
            rows += [[q, c, n] for c, n in report["categories"].items()]
            sources += [[q, s, n] for s, n in report["chosen_sources"].items()]
            by_layer += layers.medicine_rows(q, report)
    return Section("medicine", "The medicine", "Preference pairs per error category, where their chosen solutions "
                   "came from, and the layer that decided their diagnosis.",
                   [Table("medicine_categories", ["quantization", "category", "pairs"], rows),
                    Table("medicine_chosen", ["quantization", "chosen from", "pairs"], sources),
                    Table("medicine_layers", layers.MEDICINE_HEADERS, by_layer)])


def recovery_section(files: StudyFiles) -> Section:
    rows, shifts, figures = [], [], []
    for q in files.quantizations():
        r = files.recovery(q)
        if not r:
            continue
        rows.append([q, r.problems, _pct(r.full.accuracy), _pct(r.before.accuracy), _pct(r.after.accuracy),
                     _pct(r.recovered_share), _iv(r.recovered_interval), r.excluded_in_medicine])
        shifts += [[q, c.category, c.before, c.after, _pct(c.before_share), _pct(c.after_share)] for c in r.categories]
        if figure := files.output(S("evaluate", q), L.RECOVERY_PNG):
            figures.append((f"recovery-{q}", figure))
    return Section("recovery", "Accuracy recovered by the adapter", "Measured on problems outside the medicine; "
                   "the share is (after − before) / (full − before) with a paired bootstrap interval.",
                   [Table("recovery", ["quantization", "problems", "full precision", "before", "after",
                                       "recovered share", "95% interval", "left out (in medicine)"], rows),
                    Table("category_shift", ["quantization", "category", "failures before", "failures after",
                                             "share before", "share after"], shifts)], figures)


def skipped_section(files: StudyFiles) -> Section | None:
    rows = skipped_rows(files)
    return Section("skipped", "Stages not run", "Recorded as skipped by the study, each with its reason.",
                   [Table("skipped", ["stage", "reason"], rows)]) if rows else None


BUILDERS = (skipped_section, grid_section, accuracy_section, flips_section, categories_section, positions_section, lengths_section, judge_section,
            medicine_section, recovery_section)


def _save(figures, out: Path) -> list[Path]:
    saved = []
    for name, figure in figures:
        path = out / "figures" / f"{name}.png"
        if isinstance(figure, Path):
            path.write_bytes(figure.read_bytes())
        else:
            save_figure(figure, path)
        saved.append(path)
    return saved


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in table.rows)
    empty = "" if table.rows else f"<tr><td colspan='{len(table.headers)}'>nothing yet</td></tr>"
    return f"<table data-table='{table.name}'><thead><tr>{head}</tr></thead><tbody>{body}{empty}</tbody></table>"


def _md_table(table: Table) -> str:
    lines = ["| " + " | ".join(map(str, table.headers)) + " |", "|" + "---|" * len(table.headers)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in table.rows])


CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}section{margin-bottom:2.5em}
.meta{color:#666;font-size:.85em}"""


def write_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Write ``index.html``, ``report.md``, ``figures/*.png`` and ``tables/*.csv``; returns the HTML path."""
    files = StudyFiles(Path(root))
    out = Path(out) if out else files.root / "report"
    check_output_folder(out, files=("index.html", "report.md"), what="report")
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    sections = []
    for build in BUILDERS:
        section = build(files)
        if section is None:  # a section with nothing to show in this study (lengths without reasoning traces)
            continue
        section.figures = _save(section.figures, out)
        for table in section.tables:
            write_atomic(out / "tables" / f"{table.name}.csv", [table.csv()])
        sections.append(section)
    name = files.locked.get("study", files.root.name)
    versions = ", ".join(f"{k} {v}" for k, v in files.locked.get("versions", {}).items() if v)
    html_parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>quantmedic study: "
                  f"{html.escape(name)}</title><style>{CSS}</style></head><body>",
                  f"<h1>Study: {html.escape(name)}</h1><p class='meta'>{html.escape(versions)}</p>"]
    md = [f"# Study: {name}", "", versions, ""]
    for s in sections:
        html_parts.append(f"<section id='{s.id}'><h2>{html.escape(s.title)}</h2><p>{html.escape(s.text)}</p>")
        md += [f"## {s.title}", "", s.text, ""]
        for table in s.tables:
            html_parts.append(_html_table(table))
            md += [_md_table(table), ""]
        for figure in s.figures:
            data = base64.b64encode(figure.read_bytes()).decode()
            html_parts.append(f"<img alt='{figure.stem}' data-figure='{figure.stem}' src='data:image/png;base64,{data}'>")
            md += [f"![{figure.stem}](figures/{figure.name})", ""]
        html_parts.append("</section>")
    html_parts.append("</body></html>")
    write_atomic(out / "report.md", ["\n".join(md) + "\n"])
    return write_atomic(out / "index.html", ["".join(html_parts)])
