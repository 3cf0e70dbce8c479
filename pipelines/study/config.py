"""The study config (``STUDY.yaml``): one file for the whole study, validated before anything runs.

Each stage's section *is* that stage's settings model (``quantizations`` → ``QuantizeSettings``,
``generation`` → ``GenerationSettings``, ``judge`` → ``JudgeSettings``, ``argilla`` →
``PushSettings``, ``medicine`` → ``BuildSettings``, ``training`` → ``DPOSettings``), so a setting
has one name, one default and one description for the CLI and the study alike.

A ``matrix:`` (methods × bits × KV-cache settings, :mod:`.matrix`) adds its cells to ``quantizations``
after the ones given (a bad cell is an error at ``matrix``), and ``seeds:`` generates and compares every
side once per seed (the first is the primary ``seed``, the one the judge and the stages after it use).

Errors name the file, the line and the field. ``--set a.b=VALUE`` overrides a field from the
command line (VALUE is read as YAML). See ``examples/`` for two documented configs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quantmedic.annotate.push import PushSettings
from quantmedic.judge.settings import JudgeSettings
from quantmedic.medicine.build import BuildSettings
from quantmedic.pipelines.evaluation.benchmarks import BenchmarkSettings
from quantmedic.pipelines.models.generation_config import GenerationSettings
from quantmedic.pipelines.models.quantize_config import QuantizeSettings
from quantmedic.pipelines.training.dpo_config import DPOSettings
from quantmedic.taxonomy.errors import (FieldError, InputError, parse_yaml_mapping, pydantic_error_field, read_text,
                                        validation_error)
from quantmedic.taxonomy.model import DEGENERATE
from quantmedic.taxonomy.records import Quantization

from .layout import FULL_PRECISION
from .matrix import MatrixSpec, expand_matrix


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ATTEMPTS_HELP = ("a file of attempts in any format `judge` reads (quantmedic JSONL, lighteval details, ...) or a "
                 "shipped name (e.g. r1-kv3-math500-traces), graded if they are not")


class ModelSpec(_Section):
    """The full-precision model; with neither ``path`` nor ``attempts`` the study has no full-precision side."""

    path: str | None = Field(None, description="A model folder (HF format) or a Hugging Face Hub id.")
    attempts: str | None = Field(None, description=f"Read the full-precision attempts instead of generating them: "
                                                   f"{ATTEMPTS_HELP}.")
    label: str | None = Field(None, description="Name in tables and file names (default: the folder name).")
    size: str | None = Field(None, description="Model size for grouping, e.g. '8B' (radar chart per size).")


class QuantizationSpec(QuantizeSettings):
    """One quantized variant of the model: made by `quantize`, an existing checkpoint (``path``), or only its
    attempts (``attempts``: nothing quantized or generated; without ``path`` nothing can be trained either)."""

    path: str | None = Field(None, description="Use this quantized checkpoint instead of quantizing.")
    attempts: str | None = Field(None, description=f"Read this variant's attempts instead of generating them: "
                                                   f"{ATTEMPTS_HELP}.")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description=(
        "Name in tables, file names and stage names (default: METHOD-wBITS-gGROUP, e.g. gptq-w4-g128)."))
    record: Quantization | None = Field(None, description=(
        "How the model of `attempts` was quantized, stamped on those of its attempts that record none (default: "
        "method, bits and group_size), e.g. {method: none, kv_cache_dtype: int3} for a 3-bit KV cache."))

    @model_validator(mode="after")
    def _record_with_attempts(self) -> QuantizationSpec:
        if self.record is not None and not self.attempts:
            raise FieldError("record", "only with attempts: generated attempts record their own quantization")
        return self

    @property
    def label(self) -> str:
        """``name``, else the quantize settings' label."""
        return self.name or QuantizeSettings.label.fget(self)

    @property
    def has_model(self) -> bool:
        """Whether there is a quantized checkpoint (given, or quantized by the study) to generate with and treat."""
        return bool(self.path) or not self.attempts

    def quantization_record(self) -> Quantization:
        """What is stamped on imported attempts that record no quantization."""
        return self.record or Quantization(method=self.method, bits=self.bits, group_size=self.group_size)


class JudgeSpec(JudgeSettings):
    """The judge's settings, and which failures it judges."""

    failures: Literal["flipped", "all"] = Field("flipped", description="Judge the quantized failures where full "
                                                                       "precision was right, or all of them.")
    limit: int | None = Field(None, ge=1, description="Judge at most this many failures per quantization.")
    eval_limit: int = Field(0, ge=0, description="ProcessBench GSM8K items for the judge's meta-evaluation "
                                                 "(0: none).")


class ArgillaSpec(PushSettings):
    """Human verification; the run stops at this stage until enough reviews are submitted."""

    api_url: str | None = Field(None, description="Default: $ARGILLA_API_URL.")
    api_key_env: str = "ARGILLA_API_KEY"
    workspace: str | None = None
    dataset: str = Field("quantmedic-study", description="Dataset name prefix (one dataset per quantization).")
    min_reviewed: float = Field(1.0, gt=0, le=1, description="Share of pushed records that must be submitted "
                                                             "before the study goes on.")


STUDY_MEDICINE = BuildSettings(exclude_categories=(DEGENERATE,))
"""A study's medicine leaves rule-detected degenerate outputs out unless asked (``exclude_categories: []``)."""
SEEDED = ("generation", "judge", "argilla", "medicine", "training")
"""Sections whose settings have a seed: in a study, the study's ``seed`` is used by every stage."""


class StudyConfig(_Section):
    """A whole study: quantize → generate → compare → judge → review → medicine → DPO → re-evaluate.

    A side's attempts can come from a file instead (``model.attempts``, ``quantizations[i].attempts``): its
    quantize and generate stages are then not run; without a checkpoint the stages that need one (train,
    treated, rejudge, evaluate) are skipped, and without a full-precision side so are compare and evaluate."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = Field(0, description="The primary seed: every stage's (default: the first of seeds).")
    seeds: list[int] | None = Field(None, min_length=1, description=(
        "Seeds to generate with (default: [seed]): each extra seed generates the full-precision side and every "
        "quantization again and compares them (judge and the stages after it use the primary seed's attempts)."))
    model: ModelSpec
    quantizations: list[QuantizationSpec] = Field([], description=(
        "The quantized variants; the matrix's cells follow them (at least one variant in all)."))
    matrix: MatrixSpec | None = Field(None, description="methods × bits × kv_cache, each cell a quantization.")
    benchmark: BenchmarkSettings | None = Field(None, description=(
        "The problems; required when a side generates. Imported attempts are kept to its problems when given."))
    generation: GenerationSettings = GenerationSettings()
    judge: JudgeSpec = JudgeSpec()
    taxonomy: str | None = Field(None, description="A taxonomy file or a shipped name (default, reasoning); "
                                                   "default: the reference study's.")
    argilla: ArgillaSpec | None = Field(None, description="Omit to skip human verification.")
    medicine: BuildSettings = STUDY_MEDICINE
    training: DPOSettings = DPOSettings()

    @field_validator("quantizations")
    @classmethod
    def _distinct(cls, specs: list[QuantizationSpec]) -> list[QuantizationSpec]:
        labels = [s.label for s in specs]
        if FULL_PRECISION in labels:
            raise ValueError(f"{FULL_PRECISION!r} names the full-precision side: give the variant another name")
        if len(set(labels)) != len(labels):
            raise ValueError(f"two quantizations have the same settings ({', '.join(labels)})")
        return specs

    @model_validator(mode="before")
    @classmethod
    def _one_seed(cls, data: Any) -> Any:
        for section in SEEDED:
            if isinstance(data, dict) and isinstance(data.get(section), dict) and "seed" in data[section]:
                raise FieldError(f"{section}.seed", "a study has one seed for every stage: set the top-level seed")
        if isinstance(data, dict) and isinstance(data.get("seeds"), list) and data["seeds"] and "seed" not in data:
            data = {**data, "seed": data["seeds"][0]}  # the primary seed
        return data

    @model_validator(mode="after")
    def _cells(self) -> StudyConfig:
        """The matrix's cells appended to ``quantizations`` (an invalid cell is an error at ``matrix``)."""
        if self.seeds is not None:
            if self.seeds[0] != self.seed:
                raise FieldError("seeds", f"the first seed is the primary one: seed is {self.seed}, seeds start with "
                                          f"{self.seeds[0]} (give one of them, or make them agree)")
            if len(set(self.seeds)) != len(self.seeds):
                raise FieldError("seeds", "a seed is given twice")
        cells = []
        for cell in expand_matrix(self.matrix) if self.matrix else []:
            try:
                cells.append(QuantizationSpec(**cell))
            except ValidationError as error:
                what = ", ".join(f"{k}: {v}" for k, v in cell.items() if k in ("method", "bits", "kv_cache"))
                raise FieldError("matrix", f"the cell {{{what}}}: "
                                 f"{error.errors()[0]['msg'].removeprefix('Value error, ')}") from None
        if cells:
            try:
                object.__setattr__(self, "quantizations", self._distinct([*self.quantizations, *cells]))
            except ValueError as error:
                raise FieldError("matrix", str(error)) from None
        if not self.quantizations:
            raise FieldError("quantizations", "give at least one quantization (or a matrix)")
        return self

    @property
    def seed_list(self) -> list[int]:
        """Every seed the study generates with, the primary first."""
        return self.seeds or [self.seed]

    def field_of(self, index: int) -> str:
        """The config field quantization ``index`` comes from: ``quantizations.N``, or ``matrix`` for a cell."""
        given = len(self.quantizations) - (len(expand_matrix(self.matrix)) if self.matrix else 0)
        return f"quantizations.{index}" if index < given else "matrix"

    @model_validator(mode="after")
    def _study_settings(self) -> StudyConfig:
        if self.medicine.reviews:
            raise FieldError("medicine.reviews", "set by the study (true when argilla is configured)")
        for i, q in enumerate(self.quantizations):
            if not q.path and not q.attempts and not self.model.path:
                raise FieldError(self.field_of(i), "nothing to quantize: give model.path, or this variant's "
                                                       "path (a checkpoint) or attempts (a file)")
        if self.benchmark is None and self.generates:
            raise FieldError("benchmark", "required: a side generates its attempts (it has a model and no attempts "
                                          "file, or a checkpoint to re-evaluate after treatment)")
        if not self.has_full_precision and self.judge.failures == "flipped":
            raise FieldError("judge.failures", "no full-precision side (model has neither path nor attempts), so "
                                               "there are no flips: set judge.failures: all")
        return self

    @property
    def has_full_precision(self) -> bool:
        """Whether full-precision attempts exist (generated from ``model.path`` or read from ``model.attempts``)."""
        return bool(self.model.path or self.model.attempts)

    @property
    def generates(self) -> bool:
        """Whether some stage generates attempts (and so needs the benchmark's problems)."""
        return bool(self.model.path and not self.model.attempts) or any(q.has_model for q in self.quantizations)

    def seeded(self, section: str) -> Any:
        """A section's settings with the study's seed (what its stage runs with)."""
        return getattr(self, section).model_copy(update={"seed": self.seed})


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``a.b=VALUE`` assignments (VALUE read as YAML; a number picks a list item) applied to a copy of ``data``.

    >>> apply_overrides({"judge": {"limit": 5}, "q": [{"bits": 4}]}, ["judge.limit=2", "judge.models=[m]",
    ...                                                               "q.0.bits=3"])
    {'judge': {'limit': 2, 'models': ['m']}, 'q': [{'bits': 3}]}
    """
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.(\d+|[A-Za-z_]\w*))*", key):
            raise ValueError(f"--set takes KEY.PATH=VALUE, not {item!r}")
        *parents, last = key.split(".")
        node: Any = data
        for part in parents:
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ValueError(f"--set {key}: no item {part} in the list")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ValueError(f"--set {key}: {part} is not a section")
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ValueError(f"--set {key}: no item {last} in the list")
            node[int(last)] = yaml.safe_load(raw)
        else:
            node[last] = yaml.safe_load(raw)
    return data


def load_study(path: str | Path, overrides: list[str] | None = None) -> tuple[StudyConfig, dict]:
    """The validated config and its plain data (after overrides); errors name file, line and field."""
    path = Path(path)
    text = read_text(path, "study config")
    data = parse_yaml_mapping(text, path, "name, model, quantizations, benchmark, ...")
    try:
        data = apply_overrides(data, overrides or [])
    except ValueError as error:
        raise InputError(path, str(error), field="--set") from None
    try:
        return StudyConfig.model_validate(data), data
    except ValidationError as error:
        first = error.errors()[0]
        where = pydantic_error_field(first)
        for item in overrides or []:  # a bad --set value is a usage error, not the file's line
            key = item.partition("=")[0]
            if where == key or where.startswith(key + ".") or key.startswith(where + "."):
                raise InputError("--set", f"{item}: {first['msg'].removeprefix('Value error, ')}") from None
        raise validation_error(error, path, text) from None
