"""The error taxonomy as typed data: categories with subtypes, loaded from YAML or JSON."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import FieldError, parse_yaml_mapping, read_text, validation_error

NO_ERROR = "none"
"""Category and subtype id a judge gives when it finds no wrong step."""
DEGENERATE = "degenerate"
"""Category id for outputs that fail deterministic checks (loops, cut-off, no final answer)."""
RESERVED_IDS = frozenset({NO_ERROR, DEGENERATE})

_ID = r"^[a-z][a-z0-9_]*$"


class Subtype(BaseModel):
    """One fine-grained error type inside a category."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    definition: str = Field(min_length=1)
    example: str = Field(min_length=1)


class Category(BaseModel):
    """A top-level error category and its subtypes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    definition: str = Field(min_length=1)
    example: str = Field(min_length=1)
    subtypes: tuple[Subtype, ...] = Field(min_length=1)


class Taxonomy(BaseModel):
    """An error taxonomy: the vocabulary judges classify with and annotators check against."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1)
    version: int | str = 1
    categories: tuple[Category, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ids_unique_and_unreserved(self) -> "Taxonomy":
        seen: dict[str, str] = {}
        for i, category in enumerate(self.categories):
            located = [(f"categories.{i}.id", category.id),
                       *((f"categories.{i}.subtypes.{j}.id", s.id) for j, s in enumerate(category.subtypes))]
            for where, ident in located:
                if ident in RESERVED_IDS:
                    raise FieldError(where, f'id "{ident}" is reserved by quantmedic')
                if ident in seen:
                    raise FieldError(where, f'id "{ident}" is used twice (first at {seen[ident]}); ids must be unique')
                seen[ident] = where
        return self

    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.categories)

    @property
    def subtype_ids(self) -> tuple[str, ...]:
        return tuple(s.id for c in self.categories for s in c.subtypes)

    def category(self, category_id: str) -> Category:
        for category in self.categories:
            if category.id == category_id:
                return category
        raise KeyError(category_id)

    def parent_of(self, subtype_id: str) -> str:
        """The category id a subtype belongs to."""
        for category in self.categories:
            if any(s.id == subtype_id for s in category.subtypes):
                return category.id
        raise KeyError(subtype_id)

    def fingerprint(self) -> str:
        """Canonical JSON of the taxonomy, for cache keys."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def parse_taxonomy(text: str, path: str | Path = "<taxonomy>") -> Taxonomy:
    """Parse and validate taxonomy text (YAML or JSON), raising :class:`InputError` when it is bad."""
    data = parse_yaml_mapping(text, path, "name, version and categories")
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, path, text) from None


SHIPPED_TAXONOMIES: dict[str, str] = {"default": "default.yaml", "reasoning": "reasoning.yaml"}
"""The taxonomies shipped with quantmedic, by name: the reference study's (``default``) and the errors of long
chains of thought (``reasoning``)."""


def shipped_taxonomy_text(name: str) -> str:
    """The YAML text of a shipped taxonomy (:data:`SHIPPED_TAXONOMIES`)."""
    return resources.files("quantmedic.taxonomy").joinpath(SHIPPED_TAXONOMIES[name]).read_text(encoding="utf-8")


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load a taxonomy: a file, a shipped name (``default``, ``reasoning``: a file of that name wins), or the
    default one when ``path`` is None."""
    if path is None:
        return default_taxonomy()
    if str(path) in SHIPPED_TAXONOMIES and not Path(path).exists():
        return shipped_taxonomy(str(path))
    return parse_taxonomy(read_text(path, "taxonomy"), path)


def default_taxonomy_text() -> str:
    return shipped_taxonomy_text("default")


@cache
def shipped_taxonomy(name: str) -> Taxonomy:
    """A shipped taxonomy by name (:data:`SHIPPED_TAXONOMIES`)."""
    return parse_taxonomy(shipped_taxonomy_text(name), SHIPPED_TAXONOMIES[name])


def default_taxonomy() -> Taxonomy:
    """The reference study's taxonomy, shipped as ``default.yaml``."""
    return shipped_taxonomy("default")
