"""What every command module shares: the two consoles, exit codes, command registration, extras."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape

from quantmedic.taxonomy.errors import InputError, pydantic_error_field

stderr = Console(stderr=True)
stdout = Console()

EXIT_DATA = 1  # a bad input file, an endpoint or server that refuses, a missing extra, a busy output
EXIT_ABORTED = 1
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2  # the command line itself: an unknown, missing or invalid option or argument

S = TypeVar("S", bound=BaseModel)


class Commands:
    """The commands of one module, added to an app (in the order they are declared) by :meth:`register`."""

    def __init__(self) -> None:
        self.entries: list[tuple[str | None, dict[str, Any], Callable]] = []

    def command(self, name: str | None = None, **options: Any) -> Callable[[Callable], Callable]:
        def add(function: Callable) -> Callable:
            self.entries.append((name, options, function))
            return function

        return add

    def register(self, app: typer.Typer) -> None:
        for name, options, function in self.entries:
            app.command(name, **options)(function)


def require(modules: tuple[str, ...], extra: str) -> None:
    """Exit 1 with the install line (one line, the extra's brackets shown) when an optional dependency is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        error(f'this command needs {", ".join(missing)}: pip install "quantmedic[{extra}]"')
        raise typer.Exit(EXIT_DATA)


def error(message: str) -> None:
    """Print ``error: MESSAGE`` on stderr as one line, whatever the width (the message is shown as is, never
    as markup; line breaks inside it become spaces)."""
    stderr.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def split_csv(value: str) -> tuple[str, ...]:
    """``"a, b,,c"`` → ``("a", "b", "c")``."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def described(settings: type[BaseModel], name: str, *flags: str, **options: Any) -> Any:
    """A typer option whose help and bounds are those of ``settings``' field ``name`` (its default is the
    field's default, given as the parameter's default: each setting is declared once, in its model).
    Pydantic still checks the bounds (``gt`` shows as a minimum here); see :func:`build_settings`."""
    field = settings.model_fields[name]
    bounds: dict[str, Any] = {}
    for rule in field.metadata:
        for attribute, option in (("ge", "min"), ("gt", "min"), ("le", "max"), ("lt", "max")):
            if (bound := getattr(rule, attribute, None)) is not None:
                bounds[option] = float(bound) if field.annotation is float else bound
    return typer.Option(*flags, help=field.description, **{**bounds, **options})


def build_settings(settings: type[S], flags: Mapping[str, str] | None = None, **values: Any) -> S:
    """``settings(**values)``; a validation error becomes a usage error naming the option."""
    try:
        return settings(**values)
    except ValidationError as error:
        first = error.errors()[0]
        field = pydantic_error_field(first).split(".")[0].replace("<record>", "")
        flag = (flags or {}).get(field, "--" + field.replace("_", "-")) if field else None
        raise typer.BadParameter(first["msg"].removeprefix("Value error, "), param_hint=flag) from None


@contextmanager
def usage_errors(param_hint: str | None = None) -> Iterator[None]:
    """A plain ``ValueError`` from the library (bad settings) becomes a usage error (exit 2);
    an :class:`InputError` (a located bad input) passes through to ``main``."""
    try:
        yield
    except InputError:
        raise
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=param_hint) from None


@contextmanager
def hub_errors(name: str) -> Iterator[None]:
    """A model or data set that is not here and that the Hugging Face Hub cannot give (no network, no such repo,
    no access) becomes one line naming it, instead of the loader's traceback."""
    try:
        yield
    except OSError as failure:
        text = str(failure)
        if "huggingface.co" not in text and "Hugging Face" not in text:
            raise
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(failure).__name__)
        raise InputError(name, f"cannot be loaded: it is not a folder here, and the Hugging Face Hub gave no such "
                               f"model ({first})") from None


@contextmanager
def endpoint_errors(base_url: str | None) -> Iterator[None]:
    """An OpenAI-compatible endpoint that cannot be reached or refuses (after the SDK's retries) becomes one line
    naming it, and exit 1."""
    import openai

    try:
        yield
    except (openai.APIConnectionError, openai.APIStatusError) as failure:
        status = getattr(failure, "status_code", None)
        why = f"HTTP {status}" if status else type(failure).__name__
        error(f"the endpoint {base_url} refused or cannot be reached ({why}: {failure}); check --base-url, "
              "--model-name and the API key variable")
        raise typer.Exit(EXIT_ABORTED) from None


@contextmanager
def no_new_empty_file(path: Path) -> Iterator[None]:
    """If the block fails, an output file it created and left empty is removed (a refused run leaves nothing)."""
    existed = path.exists()
    try:
        yield
    except BaseException:
        if not existed and path.is_file() and path.stat().st_size == 0:
            path.unlink()
        raise
