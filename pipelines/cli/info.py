"""The ``taxonomy``, ``schema`` and ``data`` commands: what quantmedic ships."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from quantmedic.pipelines.data import SHIPPED, shipped_path
from quantmedic.taxonomy.model import default_taxonomy_text, load_taxonomy
from quantmedic.taxonomy.schemas import write_schemas

from .console import Commands, stdout

commands = Commands()


@commands.command("taxonomy")
def show_taxonomy(
    check: Annotated[Optional[Path], typer.Option(help="Validate this taxonomy file instead of printing.")] = None,
) -> None:
    """Print the default error taxonomy (YAML) to copy and edit, or --check your own."""
    if check is not None:
        taxonomy = load_taxonomy(check)
        stdout.print(f"{check}: ok ({len(taxonomy.categories)} categories, {len(taxonomy.subtype_ids)} subtypes)")
        return
    sys.stdout.write(default_taxonomy_text())


@commands.command()
def schema(folder: Annotated[Path, typer.Argument(help="Folder to write the schemas into (created if missing; an existing file there is refused before anything is written).")]) -> None:
    """Write the JSON Schemas of the shared records (problem, attempt, verdict, review, preference pair)."""
    for path in write_schemas(folder):
        stdout.print(f"wrote {path}")


@commands.command()
def data() -> None:
    """List the real public data shipped with quantmedic."""
    for name, (_, description) in SHIPPED.items():
        stdout.print(f"[bold]{name}[/bold]  {description}\n    {shipped_path(name)}")
