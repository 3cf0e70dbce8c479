"""The study config (``STUDY.yaml``): one file for the whole study, validated before anything runs.

Errors name the file, the line and the field. ``--set a.b=VALUE`` overrides a field from the
command line (VALUE is read as YAML). See ``examples/`` for two documented configs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from quantmedic.taxonomy.errors import InputError, pydantic_error_field, yaml_line


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Section):
    """The full-precision model."""

    path: str = Field(description="A model folder (HF format) or a Hugging Face Hub id.")
    label: str | None = Field(None, description="Name in tables and file names (default: the folder name).")
    size: str | None = Field(None, description="Model size for grouping, e.g. '8B' (radar chart per size).")


class QuantizationSpec(_Section):
    """One quantized variant of the model: made by `quantize`, or an existing checkpoint (``path``)."""

    method: Literal["gptq", "awq", "w8a8"] = "gptq"
    bits: int = Field(4, ge=2, le=8)
    group_size: int = 128
    tool: Literal["auto", "llmcompressor", "gptqmodel"] = "auto"
    path: str | None = Field(None, description="Use this quantized checkpoint instead of quantizing.")
    calibration: str = "gsm8k"
    num_samples: int = Field(128, ge=1)
    max_seq_length: int = Field(512, ge=16)

    @property
    def label(self) -> str:
        return f"{self.method}-w{self.bits}" + (f"-g{self.group_size}" if self.method != "w8a8" else "")


class BenchmarkSpec(_Section):
    name: str = Field(description="math500, gsm8k, aime24, a JSONL file or a Hugging Face dataset.")
    split: str | None = None
    limit: int | None = Field(None, ge=1)


class GenerationSpec(_Section):
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    n: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(2048, ge=1)
    batch_size: int = Field(8, ge=1)


class JudgeSpecConfig(_Section):
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; none: the embedded SmolLM2 judge.")
    models: list[str] = Field(default_factory=list, description="Judge model names (several: majority).")
    api_key_env: str = "OPENAI_API_KEY"
    samples: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(512, ge=16)
    concurrency: int | None = Field(None, ge=1)
    failures: Literal["flipped", "all"] = Field("flipped", description="Judge the quantized failures where full "
                                                                       "precision was right, or all of them.")
    limit: int | None = Field(None, ge=1, description="Judge at most this many failures per quantization.")
    eval_limit: int = Field(0, ge=0, description="ProcessBench GSM8K items for the judge's meta-evaluation "
                                                 "(0: none).")


class ArgillaSpec(_Section):
    """Human verification; the run stops at this stage until enough reviews are submitted."""

    api_url: str | None = Field(None, description="Default: $ARGILLA_API_URL.")
    api_key_env: str = "ARGILLA_API_KEY"
    workspace: str | None = None
    dataset: str = Field("quantmedic-study", description="Dataset name prefix (one dataset per quantization).")
    sample: int | None = Field(None, ge=1, description="Verdicts sent to humans per quantization (default all).")
    min_reviewed: float = Field(1.0, gt=0, le=1, description="Share of pushed records that must be submitted "
                                                             "before the study goes on.")
    overlap: int = Field(1, ge=1)


class MedicineSpec(_Section):
    budget: int = Field(545, ge=1)
    strategy: Literal["error-weighted", "stratified", "uniform"] = "error-weighted"
    chosen: list[Literal["full-precision", "resample", "reference"]] = ["full-precision", "resample", "reference"]
    step_level: bool = False
    include_degenerate: bool = Field(False, description="Also treat rule-detected degenerate outputs.")


class TrainingSpec(_Section):
    qlora: bool = False
    max_length: int = Field(2048, ge=16)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    batch_size: int = Field(4, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    beta: float = Field(0.1, gt=0)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    drop_long: bool = False


class StudyConfig(_Section):
    """A whole study: quantize → generate → grade → compare → judge → review → medicine → DPO → re-evaluate."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = 0
    model: ModelSpec
    quantizations: list[QuantizationSpec] = Field(min_length=1)
    benchmark: BenchmarkSpec
    generation: GenerationSpec = GenerationSpec()
    judge: JudgeSpecConfig = JudgeSpecConfig()
    taxonomy: str | None = Field(None, description="A taxonomy file; default: the reference study's.")
    argilla: ArgillaSpec | None = Field(None, description="Omit to skip human verification.")
    medicine: MedicineSpec = MedicineSpec()
    training: TrainingSpec = TrainingSpec()

    @field_validator("quantizations")
    @classmethod
    def _distinct(cls, specs: list[QuantizationSpec]) -> list[QuantizationSpec]:
        labels = [s.label for s in specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"two quantizations have the same settings ({', '.join(labels)})")
        return specs


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``a.b=VALUE`` assignments (VALUE read as YAML) applied to a copy of ``data``.

    >>> apply_overrides({"judge": {"limit": 5}}, ["judge.limit=2", "judge.models=[m]"])
    {'judge': {'limit': 2, 'models': ['m']}}
    """
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
            raise ValueError(f"--set takes KEY.PATH=VALUE, not {item!r}")
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {part} is not a section")
        node[last] = yaml.safe_load(raw)
    return data


def load_study(path: str | Path, overrides: list[str] | None = None) -> tuple[StudyConfig, dict]:
    """The validated config and its plain data (after overrides); errors name file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such study config")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise InputError(path, f"not valid YAML: {getattr(error, 'problem', error)}",
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError(path, "a study config is a mapping (name, model, quantizations, benchmark, ...)")
    try:
        data = apply_overrides(data, overrides or [])
    except ValueError as error:
        raise InputError(path, str(error), field="--set") from None
    try:
        return StudyConfig.model_validate(data), data
    except ValidationError as error:
        first = error.errors()[0]
        field = pydantic_error_field(first)
        raise InputError(path, first["msg"], line=yaml_line(text, field), field=field) from None
