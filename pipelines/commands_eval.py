"""The ``grade`` and ``compare`` commands: ``register(app)`` adds them to a typer app.

Bad input raises :class:`InputError` (the ``quantmedic`` entry point turns it into exit code 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.records import Attempt

from .shipped import resolve_input

AGREEMENT_TARGET = 0.99
EXIT_CHECK_FAILED = 1


def _progress(console: Console, description: str) -> Progress:
    return Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


def _grade_with_progress(attempts: list[Attempt], workers: int, timeout: float, console: Console,
                         description: str = "grading") -> list[Attempt]:
    from .grading import grade_attempts

    with _progress(console, description) as progress:
        task = progress.add_task(description, total=len(attempts))
        return grade_attempts(attempts, workers=workers, timeout=timeout,
                              progress=lambda done, total: progress.update(task, completed=done))


def summary_table(graded: list[Attempt]) -> Table:
    """Per model: attempts, correct, wrong, ungradable and accuracy with its 95% Wilson interval."""
    from .grading import summarize

    table = Table(title="Grading summary", show_header=True)
    for column in ("model", "attempts", "correct", "wrong", "ungradable", "accuracy [95% Wilson]"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in summarize(graded):
        i = row.interval
        accuracy = "–" if row.accuracy is None else \
            f"{100 * row.accuracy:.1f}% [{100 * i.low:.1f}, {100 * i.high:.1f}]"  # type: ignore[union-attr]
        table.add_row(escape(row.label), str(row.total), str(row.correct), str(row.wrong), str(row.ungradable),
                      accuracy)
    return table


def _ungradable_line(graded: list[Attempt]) -> str | None:
    from .grading import summarize

    reasons: dict[str, int] = {}
    for row in summarize(graded):
        if row.label != "all":
            for reason, n in row.ungradable_reasons:
                reasons[reason] = reasons.get(reason, 0) + n
    return ", ".join(f"{n} {reason.removeprefix('ungradable: ')}" for reason, n in reasons.items()) or None


def _report_agreement(workers: int, timeout: float, console: Console) -> bool:
    from quantmedic.judge.adapters import load_attempts

    from .grading import agreement
    from .shipped import shipped_path

    labelled = load_attempts(shipped_path("gsm8k-solutions"))
    result = agreement(labelled, _grade_with_progress(labelled, workers, timeout, console, "checking GSM8K"))
    ok = result.rate >= AGREEMENT_TARGET
    console.print(f"GSM8K agreement with the authors' is_correct labels: {result.agreeing}/{result.total} "
                  f"({100 * result.rate:.2f}%; target {100 * AGREEMENT_TARGET:.0f}%): "
                  f"{'[green]ok[/green]' if ok else '[red]below target[/red]'}; "
                  f"{len(result.disagreements)} disagreements", highlight=False)
    if result.disagreements:
        table = Table(title="Disagreements", show_header=True)
        for column in ("attempt", "problem", "model", "authors", "grader", "extracted", "reference", "grading"):
            table.add_column(column)
        for d in result.disagreements:
            table.add_row(d.attempt_id, str(d.source_id), d.model, str(d.expected), str(d.got),
                          escape(str(d.final_answer)), escape(str(d.reference_answer)), escape(str(d.grading)))
        console.print(table)
    return ok


def grade(
    attempts: Annotated[Optional[str], typer.Argument(
        help="Attempts to grade: quantmedic JSONL (e.g. from generation), any format `quantmedic judge` reads, "
             "or a shipped name such as gsm8k-solutions. Optional with --check-gsm8k.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Graded attempts JSONL to write "
                                                                    "(atomically).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Grading processes.")] = 2,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per attempt; a slower one is killed and "
                                                         "recorded as 'ungradable: timeout'.")] = 5.0,
    input_format: Annotated[str, typer.Option("--format", help="auto, quantmedic, processbench, gsm8k-solutions "
                                                               "or text.")] = "auto",
    check_gsm8k: Annotated[bool, typer.Option("--check-gsm8k", help="Also grade the shipped GSM8K model "
        "solutions and report the agreement with their authors' labels (and every disagreement).")] = False,
) -> None:
    """[bold]Grade[/bold] attempts: extract the final answer and check it against the reference with math-verify.

    Sets each attempt's correct, final_answer and grading (replacing any earlier grade). An attempt whose check hangs or crashes is recorded as ungradable (correct: null) and the run goes on.
    """
    from quantmedic.judge.adapters import load_attempts
    from quantmedic.taxonomy.jsonl import write_records

    if attempts is None and not check_gsm8k:
        raise typer.BadParameter("give the attempts to grade (or --check-gsm8k)", param_hint="ATTEMPTS")
    if attempts is not None and out is None:
        raise typer.BadParameter("say where the graded attempts go", param_hint="--out")
    console = Console(stderr=True)
    if attempts is not None:
        path = resolve_input(attempts)
        try:
            loaded = load_attempts(path, input_format)
        except ValueError as error:
            if isinstance(error, InputError):
                raise
            raise typer.BadParameter(str(error), param_hint="--format") from None
        graded = _grade_with_progress(loaded, workers, timeout, console)
        write_records(out, graded)  # type: ignore[arg-type]
        console.print(summary_table(graded))
        if (line := _ungradable_line(graded)) is not None:
            console.print(f"ungradable: {escape(line)}", highlight=False)
        console.print(f"wrote {len(graded)} graded attempts to {out}", highlight=False)
    if check_gsm8k and not _report_agreement(workers, timeout, console):
        raise typer.Exit(EXIT_CHECK_FAILED)


def load_graded(path: Path) -> list[Attempt]:
    """Graded attempts, one per problem and sample (what compare, evaluate and the study pair up)."""
    from quantmedic.judge.adapters import load_attempts

    from .compare import pair_key

    attempts = load_attempts(path)
    if all(a.correct is None for a in attempts):
        raise InputError(path, "no graded attempts: grade them first with `quantmedic grade`", field="correct")
    seen: dict[tuple[str, int], Attempt] = {}
    for attempt in attempts:
        key = pair_key(attempt)
        if key in seen:
            raise InputError(path, f"two attempts ({seen[key].id}, {attempt.id}) for problem {key[0]} sample "
                                   f"{key[1]}: give each sample its own sampling.sample_index", field="sampling")
        seen[key] = attempt
    return attempts


def compare_command(
    fp_attempts: Annotated[Path, typer.Argument(help="Graded attempts of the full-precision model (JSONL).")],
    quant_attempts: Annotated[Path, typer.Argument(help="Graded attempts of the quantized model (JSONL).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report files.")],
    fp_label: Annotated[Optional[str], typer.Option(help="Name of the full-precision side "
                                                         "(default: its model).")] = None,
    quant_label: Annotated[Optional[str], typer.Option(help="Name of the quantized side (default: its model "
                                                            "and quantization).")] = None,
) -> None:
    """[bold]Compare[/bold] full precision with quantized, paired by problem and sample: accuracy with 95% Wilson intervals, McNemar's exact test, flips, breakdowns by subject and level, output length and degenerate outputs.

    The quantized attempts that went right → wrong are written to flipped_failures.jsonl, ready for
    `quantmedic judge`.
    """
    from quantmedic.taxonomy.jsonl import write_atomic, write_records

    from .compare import accuracy_plot, compare, flips_plot, to_json, to_markdown

    fp, quant = load_graded(fp_attempts), load_graded(quant_attempts)
    try:
        comparison = compare(fp, quant, fp_label=fp_label, quant_label=quant_label)
    except ValueError as error:
        raise InputError(quant_attempts, f"{error} with {fp_attempts}") from None
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "comparison.json", [json.dumps(to_json(comparison), indent=2, ensure_ascii=False) + "\n"])
    markdown = to_markdown(comparison)
    write_atomic(out / "comparison.md", [markdown])
    written = ["comparison.json", "comparison.md"]
    accuracy_plot(comparison, out / "accuracy_by_subject.png",
                  title="Accuracy by subject" if comparison.by_subject else "Accuracy")
    written.append("accuracy_by_subject.png")
    if comparison.by_level:
        accuracy_plot(comparison, out / "accuracy_by_level.png", comparison.by_level, title="Accuracy by level")
        written.append("accuracy_by_level.png")
    flips_plot(comparison, out / "flips.png")
    write_records(out / "flipped_failures.jsonl", comparison.right_to_wrong)
    written += ["flips.png", "flipped_failures.jsonl"]
    sys.stdout.write(markdown)
    Console(stderr=True).print(f"wrote {', '.join(written)} to {out} ({len(comparison.right_to_wrong)} right → "
                               "wrong quantized failures for `quantmedic judge`)", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``grade`` and ``compare`` to ``app``."""
    app.command("grade", epilog="Exit codes: 0 done (ungradable attempts are recorded, not fatal), 1 the "
                                "--check-gsm8k agreement is below 99%, 2 bad input or options.")(grade)
    app.command("compare", epilog="Outputs in --out: comparison.json, comparison.md, accuracy_by_subject.png, "
                                  "accuracy_by_level.png (when levels are known), flips.png, "
                                  "flipped_failures.jsonl.")(compare_command)
