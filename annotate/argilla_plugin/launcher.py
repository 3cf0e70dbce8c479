"""Runs one ``argilla_server`` command, or a batch of them, with the osmem search engine registered.

Like ``osmem_engine.py`` beside it, this file is NOT part of the quantmedic package: it runs with
the Argilla server venv's python, by path (``python launcher.py ARGS...``), and imports nothing
from quantmedic. ``quantmedic.annotate.server`` starts every ``argilla_server`` command through
it, so the osmem engine is registered before anything resolves ARGILLA_SEARCH_ENGINE.

``--batch`` runs the commands of $QUANTMEDIC_ARGILLA_BATCH (a JSON list, kept off the command line
because it holds passwords) in one interpreter: importing argilla_server costs ~5 s a process.
A daemon thread ends the process if the Python that started it disappears (QUANTMEDIC_PARENT_PID).
"""

import json
import os
import signal
import sys
import threading
import time


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    os._exit(1)


def main() -> None:
    parent = int(os.environ.get("QUANTMEDIC_PARENT_PID", "0"))
    if parent:
        threading.Thread(target=_watch, args=(parent,), daemon=True).start()
    import osmem_engine  # noqa: F401  (registers the "osmem" search engine)
    import typer
    from argilla_server.cli import app

    cli = typer.main.get_command(app)
    if sys.argv[1:] == ["--batch"]:
        for command in json.loads(os.environ["QUANTMEDIC_ARGILLA_BATCH"]):
            print("$ python -m argilla_server", *command[:3], "...", flush=True)
            cli.main(args=command, prog_name="python -m argilla_server", standalone_mode=False)
    else:
        cli.main(args=sys.argv[1:], prog_name="python -m argilla_server")


if __name__ == "__main__":
    main()
