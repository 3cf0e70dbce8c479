"""``quantmedic check``: the deterministic step checker over a file of attempts (no LLM, no network).

Its options take their defaults and help from :class:`~quantmedic.judge.check_job.CheckSettings`. Bad options are
one line and exit 2; a bad input file, one line naming its line and field, and exit 1; nothing is written then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from quantmedic.judge.check_job import CheckSettings, check_attempts, prepare_check
from quantmedic.pipelines.data import SHIPPED, resolve_input

from .console import Commands, build_settings, described, stderr, stdout

commands = Commands()
C = CheckSettings()
FLAGS = {"input_format": "--format", "limit": "--limit"}


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, and the ``progress(done, total)`` callback that moves it."""
    with Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                  TimeRemainingColumn(), console=stderr, transient=False) as progress:
        task = progress.add_task(description, total=None)
        try:
            yield lambda done, total: progress.update(task, completed=done, total=total)
        except BaseException:
            progress.live.transient = True  # a refused run's error is its only line, not a stale bar
            raise


@commands.command(epilog="Shipped inputs you can name instead of a path: "
                         + ", ".join(f"[bold]{name}[/bold]" for name in SHIPPED) + ". Exit codes: 0 done (findings "
                         "are results, not failures), 1 a bad input file (naming its line and field), 2 bad options.")
def check(
    input: Annotated[str, typer.Argument(help="Attempts to check: any format `quantmedic judge` reads, or a shipped "
                                              "name such as gsm8k-solutions.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Findings JSONL to write (atomically): one false claim "
        "per line, with attempt_id, step (1-based), expression, relation, claimed, true and first_error (the "
        "attempt's checked error).")],
    input_format: Annotated[str, described(CheckSettings, "input_format", "--format")] = C.input_format,
    limit: Annotated[Optional[int], described(CheckSettings, "limit", "--limit")] = None,
) -> None:
    """[bold]Check the arithmetic[/bold] each step claims, exactly, with no model: a op b = c, chains, thousands
    separators, currency, percentages, fractions, decimals and LaTeX (\\frac, \\cdot, \\times, ^, \\sqrt).

    A value written with k decimals is right within 0.5·10^-k, an integer exactly. The first step with a false claim is the attempt's checked error. A claim the checker cannot read (unknowns, words, times, ranges) is skipped, never a finding.
    """
    settings = build_settings(CheckSettings, FLAGS, input_format=input_format, limit=limit)
    attempts = prepare_check(resolve_input(input), out, settings)  # bad input: one line, before any bar or file
    with _progress("checking") as progress:
        summary = check_attempts(attempts, out, progress)
    table = Table(title="Step check", show_header=False)
    for label, value in summary.lines():
        table.add_row(label, value)
    stdout.print(table)
    stderr.print(f"wrote {summary.findings} findings to {out}", highlight=False, soft_wrap=True)
