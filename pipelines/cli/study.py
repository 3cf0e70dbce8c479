"""``quantmedic run`` (a whole study from one config) and ``quantmedic report`` (its report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from quantmedic.pipelines.study.config import load_study
from quantmedic.pipelines.study.engine import WaitingForReviews
from quantmedic.pipelines.study.layout import STAGE_KINDS
from quantmedic.pipelines.study.preflight import check_study
from quantmedic.pipelines.study.report import write_report
from quantmedic.pipelines.study.stages import run_study
from quantmedic.taxonomy.errors import read_text

from .console import Commands, stderr

commands = Commands()
_STAGES = ", ".join(STAGE_KINDS)


@commands.command("run", epilog="Exit codes: 0 done, or stopped waiting for reviews; 1 a bad config or input file "
                                "(naming its line and field), a failed stage or a busy study folder; 2 bad options.")
def run_command(
    study: Annotated[Path, typer.Argument(help="The study config (YAML; see examples/).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Study folder (default: ./study-NAME; not a file).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help=f"Stop after this stage ({_STAGES}).")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="Start at this stage: earlier stages are not run "
                                                                "(they must have finished before).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a config field: KEY.PATH=VALUE "
                                                                    "(VALUE read as YAML); repeatable.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Validate the config and every file and folder it names "
        "(model and checkpoint folders, attempts files, taxonomy, prompts, benchmark and calibration files; paths "
        "are relative to the current folder) and the study folder, then exit; nothing is created or contacted (Hub ids and Argilla "
        "are checked by the stages that use them). A run checks the same first.")] = False,
) -> None:
    """[bold]Run[/bold] a whole study: quantize → generate → grade → compare → judge → review → medicine → DPO → re-evaluate.

    Stages whose settings and inputs have not changed are skipped; an edit re-runs only what it
    affects; an interrupted run resumes. The run stops cleanly at the review stage until enough
    human reviews are in, and the next run picks them up.
    """
    for name, value in (("--until", until), ("--from", start)):
        if value is not None and value not in STAGE_KINDS:
            raise typer.BadParameter(f"choose one of {_STAGES}", param_hint=name)
    config, data = load_study(study, set_ or [])
    root = out or Path(f"study-{config.name}")
    notes = check_study(config, study, read_text(study, "study config"), root, refuse=not check)
    if check:
        for note in notes:
            stderr.print(f"[yellow]note:[/yellow] a run on this machine would refuse {note}", highlight=False)
        problems = f"benchmark {config.benchmark.name}" if config.benchmark else "no benchmark"
        stderr.print(f"{study}: valid ({len(config.quantizations)} quantizations, {problems}; every file it names "
                     "is readable)", highlight=False)
        return
    try:
        result = run_study(config, data, root, console=stderr, start=start, until=until)
    except WaitingForReviews as waiting:
        stderr.print(f"[yellow]waiting for human reviews:[/yellow] {waiting}", highlight=False)
        return
    ran = [name for name, status in result.log if status == "ran"]
    stderr.print(f"study {root}: {len(ran)} stages ran, {len(result.log) - len(ran)} unchanged or not run; "
                  f"`quantmedic report {root}` writes the report", highlight=False)


@commands.command("report")
def report_command(
    study_dir: Annotated[Path, typer.Argument(help="A study folder made by `quantmedic run`.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report folder (default: STUDY_DIR/report).")] = None,
) -> None:
    """[bold]Report[/bold]: a self-contained HTML page (and Markdown) with every figure as PNG and every table as CSV."""
    path = write_report(study_dir, out)
    stderr.print(f"wrote {path} (+ report.md, figures/, tables/)", highlight=False)
