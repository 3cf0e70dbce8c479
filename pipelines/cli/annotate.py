"""``quantmedic annotate``: push verdicts to Argilla, pull the reviews, report, and a local server."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from quantmedic.annotate.connection import ArgillaTarget
from quantmedic.annotate.pull import pull
from quantmedic.annotate.push import PushSettings, plan_push, push
from quantmedic.annotate.report import REPORT_FILES, write_report
from quantmedic.annotate.server import DEFAULT_VENV, install_server_env, serve
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.model import load_taxonomy
from quantmedic.taxonomy.outputs import check_output_file, check_output_folder
from quantmedic.taxonomy.records import Review, Verdict

from .console import build_settings, described, require, stderr
from .judge import TaxonomyFile

P = PushSettings()

annotate_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                           help="Human verification of verdicts in Argilla: push, pull, report, and a local server.")


ApiUrl = Annotated[Optional[str], typer.Option(envvar="ARGILLA_API_URL", help="Argilla server URL.")]


ApiKey = Annotated[Optional[str], typer.Option(envvar="ARGILLA_API_KEY", show_envvar=True,
                                               help="Argilla API key (an owner's or admin's to push and pull).")]


Workspace = Annotated[Optional[str], typer.Option(help="Argilla workspace (default: your only one).")]


DatasetName = Annotated[str, typer.Option("--dataset", "-d", help="Argilla dataset name.")]


@annotate_app.command("push")
def annotate_push(
    verdicts: Annotated[Path, typer.Argument(help="Verdicts JSONL from `quantmedic judge`.")],
    dataset: DatasetName, api_url: ApiUrl = None, api_key: ApiKey = None, workspace: Workspace = None,
    overlap: Annotated[int, described(PushSettings, "overlap")] = P.overlap,
    sample: Annotated[Optional[int], described(PushSettings, "sample")] = None,
    stratify: Annotated[str, described(PushSettings, "stratify")] = P.stratify,
    seed: Annotated[int, described(PushSettings, "seed")] = P.seed,
    max_steps: Annotated[int, described(PushSettings, "max_steps")] = P.max_steps,
    include_degenerate: Annotated[bool, described(PushSettings, "include_degenerate")] = P.include_degenerate,
    taxonomy: TaxonomyFile = None,
) -> None:
    """Create an Argilla dataset from the taxonomy and push verdicts, the judge's answers pre-filled as suggestions.

    Record ids are the verdict ids: pushing again updates records instead of duplicating them.
    """
    require(("argilla",), "annotate")
    settings = build_settings(PushSettings, sample=sample, stratify=stratify, seed=seed, max_steps=max_steps,
                              include_degenerate=include_degenerate, overlap=overlap)
    loaded, vocabulary = read_records(verdicts, Verdict), load_taxonomy(taxonomy)  # the files before connecting
    target = ArgillaTarget.from_options(api_url, api_key, workspace)
    summary = push(target, dataset, plan_push(loaded, settings), vocabulary, settings, console=stderr)
    skipped = ", ".join(f"{n} {why}" for why, n in summary["skipped"].items()) or "none"
    stderr.print(f"{'created' if summary['created'] else 'updated'} dataset {summary['dataset']} in workspace "
                  f"{summary['workspace']}: {summary['records']} records pushed (skipped: {skipped})\n"
                  f"annotate at {summary['url']}", highlight=False)


@annotate_app.command("pull")
def annotate_pull(
    dataset: DatasetName,
    verdicts: Annotated[Path, typer.Option(help="The verdicts file that was pushed (reviews are joined to it).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Reviews JSONL to write (atomically; not the verdicts file). Checked before Argilla is asked anything.")],
    api_url: ApiUrl = None, api_key: ApiKey = None, workspace: Workspace = None,
    attach_verdicts: Annotated[bool, typer.Option(help="Embed each full verdict in its review.")] = False,
) -> None:
    """Export submitted responses as reviews (one per annotator and record); drafts and discarded are counted.

    --out is checked and --verdicts read before Argilla is asked anything; --out must not be the verdicts file.
    """
    require(("argilla",), "annotate")
    check_output_file(out, inputs=[verdicts], what="reviews")
    pushed = read_records(verdicts, Verdict)
    target = ArgillaTarget.from_options(api_url, api_key, workspace)
    reviews, counts = pull(target, dataset, pushed, attach_verdicts=attach_verdicts)
    write_records(out, reviews)
    per = ", ".join(f"{a}: {n}" for a, n in sorted(counts.submitted.items())) or "none"
    stderr.print(f"{counts.records} records: {sum(counts.submitted.values())} submitted reviews ({per}); "
                  f"{counts.drafts} drafts and {counts.discarded} discarded responses left out; "
                  f"{counts.without_response} records without any response\nwrote {out}", highlight=False)


@annotate_app.command("report")
def annotate_report(
    reviews: Annotated[Path, typer.Argument(help="Reviews JSONL from `quantmedic annotate pull`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.json, report.md and the PNGs (not a file; those names must be free of folders and of the reviews file).")],
) -> None:
    """Diagnostic accuracy of the judge with 95% Wilson intervals, breakdowns, confusion and agreement."""
    check_output_folder(out, files=REPORT_FILES, inputs=[reviews])
    loaded = read_records(reviews, Review)
    if not loaded:
        raise InputError(reviews, "no reviews: nothing was submitted yet")
    markdown, written = write_report(loaded, out)
    sys.stdout.write(markdown)
    stderr.print(f"wrote {out}/{', '.join(written)}")


@annotate_app.command("serve")
def annotate_serve(
    home: Annotated[Path, typer.Option(help="Folder for the database, logs and accounts.json (reused on restart).")]
        = Path("~/.local/share/quantmedic/argilla"),
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the web UI and API.")] = 6900,
    annotators: Annotated[int, typer.Option(min=0, help="Annotator accounts to create.")] = 2,
    python: Annotated[Optional[Path], typer.Option(help="Python of the argilla-server environment (default: "
        "$QUANTMEDIC_ARGILLA_PYTHON, else ~/.cache/quantmedic/argilla-venv).")] = None,
    install: Annotated[bool, typer.Option("--install", help="First create that environment (argilla-server 2.8.0, "
        "osmem-server, click<8.2; about 90 s, from PyPI).")] = False,
) -> None:
    """Start a local Argilla (argilla-server 2.8 on SQLite, osmem as its search engine, Debian's redis-server) for annotators on a laptop; print the URL and the owner's and annotators' credentials; stop everything on Ctrl-C."""
    check_output_folder(home.expanduser(), flag="--home")
    if python is not None and not install and not python.expanduser().is_file():
        raise InputError(python, "no such file: --python takes the python of an argilla-server environment "
                                 "(or add --install to create one there)", field="--python")
    if install:
        stderr.print(f"creating the Argilla server environment in {python or DEFAULT_VENV} ...")
        python = install_server_env(python.parent.parent if python else DEFAULT_VENV)
    serve(home.expanduser(), python=python, port=port, annotators=annotators)
