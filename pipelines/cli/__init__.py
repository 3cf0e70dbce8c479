"""The ``quantmedic`` command line: one module per command group, registered here in help order.

Each command parses its options, builds one settings object, calls one library function and
prints; :func:`main` turns the library's errors into one line and a documented exit code.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from quantmedic.annotate.connection import AnnotateError
from quantmedic.annotate.server import ArgillaServerError
from quantmedic.judge.embedded import EmbeddedJudgeUnavailable
from quantmedic.judge.runner import JudgeRunAborted
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.locks import OutputLocked

from . import annotate, evaluation, info, judge, medicine, models, study, training
from .console import EXIT_ABORTED, EXIT_BAD_INPUT, stderr

app = typer.Typer(
    name="quantmedic", no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich", add_completion=False,
    help="Diagnose, verify and treat the step-by-step math reasoning failures of quantized LLMs.")

judge.commands.register(app)
app.add_typer(annotate.annotate_app, name="annotate")
models.commands.register(app)
evaluation.commands.register(app)
app.add_typer(medicine.medicine_app, name="medicine")
app.add_typer(training.train_app, name="train")
evaluation.evaluate_commands.register(app)
study.commands.register(app)
info.commands.register(app)


def main() -> None:
    """Console-script entry point: clear one-line errors and documented exit codes."""
    try:
        app()  # standalone: usage errors print themselves and exit 2
    except (InputError, EmbeddedJudgeUnavailable, AnnotateError, ArgillaServerError) as error:
        stderr.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)
    except OutputLocked as error:
        stderr.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_ABORTED)
    except JudgeRunAborted as error:
        stderr.print(f"[red]error:[/red] the judge endpoint refused the request ({escape(str(error))}); check "
                     "--base-url, --model and the API key variable", highlight=False, soft_wrap=True)
        sys.exit(EXIT_ABORTED)
    except KeyboardInterrupt:
        stderr.print("interrupted: answers received so far are cached; rerun the same command to resume")
        sys.exit(130)

