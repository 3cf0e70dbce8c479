"""The ``grade``, ``compare`` and ``evaluate`` commands: grading attempts, the paired comparison of full
precision with quantized, and the recovery after treatment.

Bad input raises :class:`InputError` (the ``quantmedic`` entry point turns it into exit code 1, or 2 when it names an option).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from quantmedic.judge.adapters import iter_attempts
from quantmedic.medicine.build import read_report
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.outputs import check_output_file, check_output_folder
from quantmedic.taxonomy.records import Attempt, Verdict

from quantmedic.pipelines.data import resolve_input
from quantmedic.pipelines.evaluation import compare as C, recovery as R
from quantmedic.pipelines.evaluation.compare import PairingError, load_graded, to_markdown, write_comparison_files
from quantmedic.pipelines.evaluation.graded_file import grade_into
from quantmedic.pipelines.evaluation.grading import Agreement, GradingSummary
from quantmedic.pipelines.evaluation.grading import check_gsm8k as gsm8k_agreement  # --check-gsm8k is a flag
from quantmedic.pipelines.evaluation.recovery import evaluate_recovery, write_recovery

from .console import EXIT_CHECK_FAILED, Commands, stderr, usage_errors

AGREEMENT_TARGET = 0.99
COMPARE_FILES = (C.COMPARISON_JSON, C.COMPARISON_MD, C.ACCURACY_BY_SUBJECT_PNG, C.ACCURACY_BY_LEVEL_PNG, C.FLIPS_PNG,
                 C.LENGTHS_PNG, C.FLIPPED_FAILURES, C.ALL_FAILURES)

commands = Commands()
evaluate_commands = Commands()


@contextmanager
def _progress(description: str, total: int | None = None) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, and the ``progress(done, total)`` callback that moves it."""
    with Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                  TimeRemainingColumn(), console=stderr, transient=False) as progress:
        task = progress.add_task(description, total=total)
        try:
            yield lambda done, total: progress.update(task, completed=done, total=total)
        except BaseException:
            progress.live.transient = True  # a refused run's error is its only line, not a stale bar
            raise


def summary_table(summaries: Sequence[GradingSummary]) -> Table:
    """Per model: attempts, correct, wrong, ungradable and accuracy with its 95% Wilson interval."""
    table = Table(title="Grading summary", show_header=True)
    for column in ("model", "attempts", "correct", "wrong", "ungradable", "accuracy [95% Wilson]"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in summaries:
        i = row.interval
        accuracy = "–" if row.accuracy is None else \
            f"{100 * row.accuracy:.1f}% [{100 * i.low:.1f}, {100 * i.high:.1f}]"  # type: ignore[union-attr]
        table.add_row(escape(row.label), str(row.total), str(row.correct), str(row.wrong), str(row.ungradable),
                      accuracy)
    return table


def _ungradable_line(summaries: Sequence[GradingSummary]) -> str | None:
    reasons: dict[str, int] = {}
    for row in summaries:
        if row.label != "all":
            for reason, n in row.ungradable_reasons:
                reasons[reason] = reasons.get(reason, 0) + n
    return ", ".join(f"{n} {reason.removeprefix('ungradable: ')}" for reason, n in reasons.items()) or None


def _print_agreement(result: Agreement, what: str = "GSM8K agreement with the authors' is_correct labels",
                     old: str = "authors") -> bool:
    """Print an agreement with its 95% Wilson interval and every disagreement; whether it reaches the target."""
    ok = result.rate >= AGREEMENT_TARGET
    i = result.interval
    ci = f" [95% Wilson {100 * i.low:.1f}, {100 * i.high:.1f}]" if i else ""
    stderr.print(f"{what}: {result.agreeing}/{result.total} ({100 * result.rate:.2f}%{ci}; target "
                 f"{100 * AGREEMENT_TARGET:.0f}%): {'[green]ok[/green]' if ok else '[red]below target[/red]'}; "
                 f"{len(result.disagreements)} disagreements", highlight=False, soft_wrap=True)
    if result.disagreements:
        table = Table(title="Disagreements", show_header=True)
        for column in ("attempt", "problem", "model", old, "grader", "extracted", "reference", "grading"):
            table.add_column(column, overflow="fold")
        for d in result.disagreements:
            table.add_row(d.attempt_id, str(d.source_id), d.model, escape(f"{d.expected} ({d.labelled_by})" if
                          d.labelled_by else str(d.expected)), str(d.got), escape(str(d.final_answer)),
                          escape(str(d.reference_answer)), escape(str(d.grading)))
        stderr.print(table)
    return ok


def _print_label_check(result: Agreement) -> None:
    """``grade --check-labels``: the new grades against the labels the input carried (reported, never fatal)."""
    if not result.total:
        stderr.print("--check-labels: the input carries no correctness labels to compare with", highlight=False)
        return
    _print_agreement(result, "agreement with the input's labels", old="input label")


def _reader(path: Path, input_format: str) -> Callable[[], Iterator[Attempt]]:
    """The attempts to grade, read anew (streamed) at each call; a format that does not fit is a usage error on
    --format."""
    def read() -> Iterator[Attempt]:
        with usage_errors("--format"):
            yield from iter_attempts(path, input_format)

    return read


@commands.command("grade", epilog="Exit codes: 0 done (ungradable attempts are recorded, not fatal), 1 bad "
                                  "input data (naming the file, line and field) or the --check-gsm8k agreement is "
                                  "below 99%, 2 bad options.")
def grade(
    attempts: Annotated[Optional[str], typer.Argument(
        help="Attempts to grade: quantmedic JSONL (e.g. from generation), any format `quantmedic judge` reads, "
             "or a shipped name such as gsm8k-solutions (two different attempts under one id are refused). "
             "Optional with --check-gsm8k.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Graded attempts JSONL (not the input). Each "
        "attempt is appended as it is graded, so a killed run loses nothing; a rerun keeps the attempts already "
        "graded there and grades the rest; the finished file holds the input's attempts in its order. An --out "
        "holding attempts that are not in the input is refused (remove it to grade anew).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Grading processes.")] = 2,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per attempt; a slower one is killed and "
                                                         "recorded as 'ungradable: timeout'.")] = 5.0,
    input_format: Annotated[str, typer.Option("--format", help="auto, quantmedic, processbench, gsm8k-solutions, "
                                                               "lighteval (its details records) or text.")] = "auto",
    check_gsm8k: Annotated[bool, typer.Option("--check-gsm8k", help="Also grade the shipped GSM8K model "
        "solutions and report the agreement with their authors' labels (and every disagreement).")] = False,
    check_labels: Annotated[bool, typer.Option("--check-labels", help="Report how the new grades agree with the "
        "correctness labels the input already carried (e.g. lighteval's extractive_match), with a 95% Wilson "
        "interval, and list every disagreement (id, problem, extracted answer, reference, old label, new grade). "
        "Reported only: the exit code does not depend on it.")] = False,
) -> None:
    """[bold]Grade[/bold] attempts: extract the final answer and check it against the reference with math-verify.

    Sets each attempt's correct, final_answer and grading (replacing any grade the input carries). An attempt whose check hangs or crashes is recorded as ungradable (correct: null) and the run goes on. Resumable: see --out.
    """
    if attempts is None and not check_gsm8k:
        raise typer.BadParameter("give the attempts to grade (or --check-gsm8k)", param_hint="ATTEMPTS")
    if check_labels and attempts is None:
        raise typer.BadParameter("--check-labels compares the grades of ATTEMPTS with their labels: give them",
                                 param_hint="--check-labels")
    if attempts is not None and out is None:
        raise typer.BadParameter("say where the graded attempts go", param_hint="--out")
    if attempts is not None:
        source = resolve_input(attempts)
        check_output_file(out, inputs=[source], what="graded attempts")  # type: ignore[arg-type]
        with _progress("grading") as progress:
            run = grade_into(_reader(source, input_format), out, workers=workers, timeout=timeout,  # type: ignore[arg-type]
                             progress=progress, check_labels=check_labels)
        if run.kept:
            stderr.print(f"kept {run.kept} attempts already graded in {out}", highlight=False)
        stderr.print(summary_table(run.summaries))
        if (line := _ungradable_line(run.summaries)) is not None:
            stderr.print(f"ungradable: {escape(line)}", highlight=False)
        stderr.print(f"wrote {run.total} graded attempts to {out}", highlight=False)
        if run.agreement is not None:
            _print_label_check(run.agreement)
    if check_gsm8k:
        with _progress("checking GSM8K") as progress:
            result = gsm8k_agreement(workers=workers, timeout=timeout, progress=progress)
        if not _print_agreement(result):
            raise typer.Exit(EXIT_CHECK_FAILED)


@commands.command("compare", epilog="Outputs in --out: comparison.json, comparison.md, accuracy_by_subject.png, "
                                    "accuracy_by_level.png (when levels are known), flips.png, lengths.png (when "
                                    "either side has reasoning traces), flipped_failures.jsonl, failures.jsonl "
                                    "(every quantized attempt graded wrong).")
def compare_command(
    fp_attempts: Annotated[Path, typer.Argument(help="Graded attempts of the full-precision model (JSONL).")],
    quant_attempts: Annotated[Path, typer.Argument(help="Graded attempts of the quantized model (JSONL).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report files (checked first: not a file, "
                                                          "and none of its files may be an input).")],
    fp_label: Annotated[Optional[str], typer.Option(help="Name of the full-precision side "
                                                         "(default: its model).")] = None,
    quant_label: Annotated[Optional[str], typer.Option(help="Name of the quantized side (default: its model "
                                                            "and quantization, and its calibration when the two "
                                                            "sides' calibrations differ).")] = None,
) -> None:
    """[bold]Compare[/bold] full precision with quantized, paired by problem and sample: accuracy with 95% Wilson intervals, McNemar's exact test, flips, breakdowns by subject and level, output length and degenerate outputs.

    Reasoning models' traces (<think> ... </think>) also get their lengths: thinking and solution tokens, sections,
    truncated traces and reflections per 1,000 thinking tokens, for all, right and wrong answers.

    The quantized attempts that went right → wrong are written to flipped_failures.jsonl, ready for
    `quantmedic judge`.
    """
    check_output_folder(out, files=COMPARE_FILES, inputs=[fp_attempts, quant_attempts], what="comparison")
    try:
        comparison, written = write_comparison_files(fp_attempts, quant_attempts, out, fp_label=fp_label,
                                                     quant_label=quant_label)
    except PairingError as error:
        raise InputError(quant_attempts, f"{error} with {fp_attempts}") from None
    sys.stdout.write(to_markdown(comparison))
    stderr.print(f"wrote {', '.join(written)} to {out} ({len(comparison.right_to_wrong)} right → wrong quantized "
                 "failures for `quantmedic judge`)", highlight=False, soft_wrap=True)


@evaluate_commands.command("evaluate", epilog="Exit codes: 0 done, 1 bad input data, 2 bad options.")
def evaluate_command(
    full: Annotated[Path, typer.Option("--full", help="Graded attempts of the full-precision model.")],
    before: Annotated[Path, typer.Option("--before", help="Graded attempts of the quantized model.")],
    after: Annotated[Path, typer.Option("--after", help="Graded attempts of the quantized model with the adapter "
                                                        "(`quantmedic generate --adapter`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for recovery.json, recovery.md, recovery.png (checked first: not a file, none of them an input).")],
    medicine: Annotated[Optional[Path], typer.Option("--medicine", help="The medicine folder: its problems are "
                                                                        "left out of the measurement.")] = None,
    verdicts_before: Annotated[Optional[Path], typer.Option(help="Verdicts on the failures before treatment "
                                                                 "(for the change in the error-category mix).")] = None,
    verdicts_after: Annotated[Optional[Path], typer.Option(help="Verdicts on the failures after treatment.")] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 4000,
) -> None:
    """[bold]Evaluate[/bold] a treatment: accuracy before and after the adapter, and the share of the accuracy lost to quantization that came back, with intervals."""
    check_output_folder(out, files=(R.RECOVERY_JSON, R.RECOVERY_MD, R.RECOVERY_PNG),
                        inputs=[full, before, after, verdicts_before, verdicts_after], what="recovery report")
    keys = read_report(medicine)["problem_keys"] if medicine else []
    vb = read_records(verdicts_before, Verdict) if verdicts_before else []
    va = read_records(verdicts_after, Verdict) if verdicts_after else []
    result = evaluate_recovery(load_graded(full), load_graded(before), load_graded(after), medicine_keys=keys,
                               verdicts_before=vb, verdicts_after=va, n_resamples=resamples, seed=seed)
    if result.n == 0:
        raise InputError(after, "no problem is present and gradable in all three files"
                         + (" outside the medicine" if result.excluded_medicine else ""))
    markdown, written = write_recovery(result, out)
    sys.stdout.write(markdown)
    if not medicine:
        stderr.print("note: without --medicine nothing checks that these problems were not trained on",
                     highlight=False)
    stderr.print(f"wrote {', '.join(written)} to {out}", highlight=False)
