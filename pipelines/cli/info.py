"""The ``taxonomy``, ``schema`` and ``data`` commands: what quantmedic ships."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from quantmedic.pipelines.data import SHIPPED, shipped_path
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.model import SHIPPED_TAXONOMIES, load_taxonomy, shipped_taxonomy_text
from quantmedic.taxonomy.schemas import write_schemas

from .console import Commands, stdout

commands = Commands()


@commands.command("taxonomy")
def show_taxonomy(
    name: Annotated[str, typer.Argument(help=f"The shipped taxonomy to print: {', '.join(SHIPPED_TAXONOMIES)} "
                                             "(reasoning: the errors of long chains of thought).")] = "default",
    check: Annotated[Optional[str], typer.Option(help="Validate this taxonomy file (or shipped name) instead of "
                                                      "printing.")] = None,
) -> None:
    """Print a shipped error taxonomy (YAML) to copy and edit, or --check your own; any command's --taxonomy takes
    a file or a shipped name."""
    if check is not None:
        taxonomy = load_taxonomy(check)
        stdout.print(f"{check}: ok ({taxonomy.name}: {len(taxonomy.categories)} categories, "
                     f"{len(taxonomy.subtype_ids)} subtypes)", highlight=False)
        return
    if name not in SHIPPED_TAXONOMIES:
        raise InputError(name, f"is not a shipped taxonomy; choose one of {', '.join(SHIPPED_TAXONOMIES)}",
                         usage=True)
    sys.stdout.write(shipped_taxonomy_text(name))


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
