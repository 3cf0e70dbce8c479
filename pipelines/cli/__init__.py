"""The ``quantmedic`` command line: one module per command group, registered here in help order.

Each command parses its options, builds one settings object, calls one library function and
prints; :func:`main` turns the library's errors into one line and a documented exit code.
"""

from __future__ import annotations

import signal
import sys
import threading


def _interrupted_while_loading(*_) -> None:
    sys.exit(130)  # Ctrl-C while the command line is still loading: quietly, no traceback


_LOADING = threading.current_thread() is threading.main_thread()
_SIGINT = signal.signal(signal.SIGINT, _interrupted_while_loading) if _LOADING else None

import typer  # noqa: E402 (after the Ctrl-C handler, which must cover the imports)
from rich.markup import escape

from quantmedic.annotate.connection import AnnotateError
from quantmedic.annotate.server import ArgillaServerError
from quantmedic.judge.embedded import EmbeddedJudgeUnavailable
from quantmedic.judge.runner import JudgeRunAborted
from quantmedic.pipelines.evaluation.pool import PoolError
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.locks import OutputLocked

from . import annotate, check, evaluation, info, judge, medicine, models, study, training
from .console import EXIT_ABORTED, EXIT_DATA, EXIT_USAGE, error as print_error, stderr

if _LOADING:
    signal.signal(signal.SIGINT, _SIGINT)

app = typer.Typer(
    name="quantmedic", no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich", add_completion=False,
    help="Diagnose, verify and treat the step-by-step math reasoning failures of quantized LLMs.")

judge.commands.register(app)
check.commands.register(app)
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
    except InputError as bad:  # a bad option is a usage error; a bad file, its line and field, a data error
        print_error(str(bad))
        sys.exit(EXIT_USAGE if bad.is_usage else EXIT_DATA)
    except (EmbeddedJudgeUnavailable, AnnotateError, ArgillaServerError) as unavailable:
        print_error(str(unavailable))
        sys.exit(EXIT_DATA)
    except PoolError as broken:
        print_error(f"{broken}; nothing was lost: rerun the same command")
        sys.exit(EXIT_ABORTED)
    except OutputLocked as error:
        stderr.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_ABORTED)
    except JudgeRunAborted as error:
        stderr.print(f"[red]error:[/red] the judge endpoint refused the request ({escape(str(error))}); check "
                     "--base-url, --model and the API key variable", highlight=False, soft_wrap=True)
        sys.exit(EXIT_ABORTED)
    except SystemExit as done:
        if done.code == 130:  # typer turns Ctrl-C into exit 130, silently
            _say_interrupted()
        raise
    except KeyboardInterrupt:
        _say_interrupted()
        sys.exit(130)


def _say_interrupted() -> None:
    stderr.print("interrupted: what was finished is kept (judge answers are cached, attempts generated or graded are "
                 "on disk); rerun the same command to resume", highlight=False, soft_wrap=True)
