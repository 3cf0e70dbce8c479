"""Quantizing a model (GPTQ, AWQ, W8A8) with llm-compressor or GPTQModel, and loading any quantized
checkpoint for generation together with the :class:`Quantization` record of how it was made.

``quantize`` writes :data:`RECORD_FILE` (a serialised Quantization) beside the checkpoint, so the
settings travel into every Attempt generated from it. Checkpoints quantized elsewhere (AutoAWQ,
AutoGPTQ, GPTQModel or llm-compressor uploads on the Hub) get a record inferred from their
``config.json`` ``quantization_config``.

Tools: llm-compressor writes compressed-tensors (GPTQ W{bits}A16; W8A8 = SmoothQuant + GPTQ);
GPTQModel writes GPTQ and AWQ (GEMM) checkpoints. ``tool="auto"`` picks llm-compressor except for
AWQ without an accelerator, where llm-compressor 0.14 fails (an unconditional ``pin_memory()``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.records import Quantization

from .prompting import render_prompt

Method = Literal["gptq", "awq", "w8a8"]
Tool = Literal["llmcompressor", "gptqmodel", "auto"]
METHODS: tuple[str, ...] = ("gptq", "awq", "w8a8")
TOOLS: tuple[str, ...] = ("llmcompressor", "gptqmodel", "auto")
RECORD_FILE = "quantmedic-quantization.json"
_DISTRIBUTIONS = {"llmcompressor": ("llm-compressor", "llmcompressor"), "gptqmodel": ("gptqmodel", "gptqmodel")}


# --- choosing a tool and checking settings (pure) ---

def has_accelerator() -> bool:
    """Whether torch sees a GPU (or another accelerator)."""
    import torch

    return bool(torch.cuda.is_available() or (hasattr(torch, "accelerator") and torch.accelerator.is_available()))


def choose_tool(method: str, tool: str, *, accelerator: bool) -> str:
    """The tool that will quantize: ``tool`` itself, or for ``auto`` the one that works here.

    >>> choose_tool("awq", "auto", accelerator=False), choose_tool("awq", "auto", accelerator=True)
    ('gptqmodel', 'llmcompressor')
    >>> choose_tool("gptq", "auto", accelerator=False)
    'llmcompressor'
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")
    if tool == "auto":
        return "gptqmodel" if method == "awq" and not accelerator else "llmcompressor"
    if tool == "gptqmodel" and method == "w8a8":
        raise ValueError("GPTQModel does not make W8A8 checkpoints; use --tool llmcompressor")
    if tool == "llmcompressor" and method == "awq" and not accelerator:
        raise ValueError("llm-compressor's AWQ needs an accelerator (it pins memory unconditionally); "
                         "use --tool gptqmodel on CPU")
    return tool


def check_settings(method: str, bits: int, group_size: int | None) -> None:
    """Reject settings no tool here supports."""
    if method == "w8a8" and bits != 8:
        raise ValueError("W8A8 quantizes weights and activations to 8 bits: use --bits 8")
    if method == "awq" and bits != 4:
        raise ValueError("AWQ checkpoints are 4-bit")
    if method == "gptq" and bits not in (2, 3, 4, 8):
        raise ValueError("GPTQ takes 2, 3, 4 or 8 bits")
    if group_size is not None and group_size != -1 and group_size < 1:
        raise ValueError("group size must be positive, or -1 for one group per output channel")


def tool_version(tool: str) -> str:
    """'llm-compressor 0.14.0.1', 'gptqmodel 7.6.0'."""
    label, distribution = _DISTRIBUTIONS[tool]
    return f"{label} {importlib.metadata.version(distribution)}"


# --- calibration data ---

def calibration_texts(calibration: Sequence[str] | str, tokenizer: Any, num_samples: int) -> tuple[list[str], str]:
    """``(texts, name)``: the given texts, or a benchmark's problems (shipped name, JSONL file or
    Hugging Face dataset, read by ``load_benchmark``) rendered through the step prompt and followed
    by their reference solutions, so calibration looks like generation."""
    if not isinstance(calibration, str):
        texts = [t for t in calibration if t.strip()][:num_samples]
        name = "custom"
    else:
        from .benchmarks import load_benchmark

        problems = load_benchmark(calibration, limit=num_samples)
        texts = [render_prompt(tokenizer, p) + (p.reference_solution or p.reference_answer or "") for p in problems]
        name = calibration
    if not texts:
        raise ValueError("no calibration texts")
    return texts, name


# --- the record ---

def write_record(out_dir: str | Path, quantization: Quantization) -> Path:
    path = Path(out_dir) / RECORD_FILE
    path.write_text(quantization.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def _first_weights(config_groups: dict) -> tuple[dict, dict | None]:
    group = next(iter(config_groups.values()), {}) if config_groups else {}
    return group.get("weights") or {}, group.get("input_activations")


def _recipe_method(recipe: str | None) -> str | None:
    if not recipe:
        return None
    for modifier, method in (("AWQModifier", "awq"), ("GPTQModifier", "gptq"), ("QuantizationModifier", "rtn")):
        if re.search(rf"\b{modifier}\b", recipe):
            return method
    return None


def infer_quantization(config: dict, recipe: str | None = None) -> Quantization | None:
    """The Quantization a checkpoint's ``config.json`` describes (None for full precision).

    ``recipe`` is llm-compressor's ``recipe.yaml``, which names the algorithm compressed-tensors omits.

    >>> infer_quantization({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128,
    ...                     "version": "gemm", "zero_point": True}}).format
    'awq-gemm'
    """
    qc = config.get("quantization_config")
    if not qc:
        return None
    kind = str(qc.get("quant_method", "unknown")).lower()
    if kind == "compressed-tensors":
        weights, activations = _first_weights(qc.get("config_groups") or {})
        bits, act_bits = weights.get("num_bits"), (activations or {}).get("num_bits")
        method = _recipe_method(recipe) or "unknown"
        if act_bits:
            method = f"w{bits}a{act_bits}"
        return Quantization(method=method, bits=bits, group_size=weights.get("group_size"), format="compressed-tensors",
                            tool=None, extra={"compressed_format": qc.get("format"), "inferred": True,
                                              "symmetric": weights.get("symmetric"), "strategy": weights.get("strategy"),
                                              "algorithm": _recipe_method(recipe)})
    quantizer = (qc.get("meta") or {}).get("quantizer") or qc.get("quantizer")
    tool = " ".join(str(quantizer[0]).split(":", 1)) if isinstance(quantizer, list) and quantizer else None
    if kind == "awq":
        fmt = f"awq-{str(qc.get('version') or qc.get('format') or 'gemm').lower()}"
        return Quantization(method="awq", bits=qc.get("bits"), group_size=qc.get("group_size"), tool=tool, format=fmt,
                            extra={"inferred": True, "zero_point": qc.get("zero_point")})
    if kind == "gptq":
        return Quantization(method="gptq", bits=qc.get("bits"), group_size=qc.get("group_size"), tool=tool,
                            format=str(qc.get("checkpoint_format") or "gptq"),
                            extra={"inferred": True, "desc_act": qc.get("desc_act"), "sym": qc.get("sym")})
    bits = qc.get("bits") or (4 if qc.get("load_in_4bit") else 8 if qc.get("load_in_8bit") else None)
    return Quantization(method=kind, bits=bits, group_size=qc.get("group_size"), format=kind, extra={"inferred": True})


def read_quantization(model_dir: str | Path) -> Quantization | None:
    """The checkpoint's Quantization: its record file, else inferred from config.json (None: full precision)."""
    model_dir = Path(model_dir)
    record = model_dir / RECORD_FILE
    if record.is_file():
        return Quantization.model_validate_json(record.read_text(encoding="utf-8"))
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        return None
    recipe = model_dir / "recipe.yaml"
    return infer_quantization(json.loads(config_path.read_text(encoding="utf-8")),
                              recipe.read_text(encoding="utf-8") if recipe.is_file() else None)


def quantization_of(model: str | Path) -> Quantization | None:
    """:func:`read_quantization` for a folder; for a Hub id, inferred from its config (fetches config.json only)."""
    if Path(model).exists():
        return read_quantization(model)
    from transformers import AutoConfig

    return infer_quantization(AutoConfig.from_pretrained(str(model)).to_dict())


# --- quantizing ---

@dataclass(frozen=True)
class QuantizeSettings:
    """What to quantize and how."""

    method: str
    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = True
    num_samples: int = 128
    max_seq_length: int = 512


def _llmcompressor_recipe(settings: QuantizeSettings) -> list:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import GPTQModifier

    if settings.method == "w8a8":
        from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

        return [SmoothQuantModifier(smoothing_strength=0.8),
                GPTQModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])]
    grouped = settings.group_size not in (None, -1)
    weights = QuantizationArgs(num_bits=settings.bits, type="int", symmetric=settings.symmetric,
                               strategy="group" if grouped else "channel",
                               group_size=settings.group_size if grouped else None)
    scheme = QuantizationScheme(targets=["Linear"], weights=weights)
    if settings.method == "awq":
        from llmcompressor.modifiers.awq import AWQModifier

        return [AWQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"])]
    return [GPTQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"])]


def _with_llmcompressor(model_dir: Path, out_dir: Path, settings: QuantizeSettings, texts: list[str]) -> dict:
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    oneshot(model=model, processor=tokenizer, dataset=Dataset.from_dict({"text": texts}),
            recipe=_llmcompressor_recipe(settings), max_seq_length=settings.max_seq_length,
            num_calibration_samples=len(texts), shuffle_calibration_samples=False)
    model.save_pretrained(out_dir, save_compressed=True)
    tokenizer.save_pretrained(out_dir)
    qc = json.loads((out_dir / "config.json").read_text())["quantization_config"]
    return {"format": "compressed-tensors", "compressed_format": qc.get("format")}


def default_cpu_workers() -> int:
    """GPTQModel's CPU workers: at least 2 (with 1, its AWQ fails on a 2-core machine)."""
    return max(2, min(12, ((os.cpu_count() or 1) + 1) // 2))


def _with_gptqmodel(model_dir: Path, out_dir: Path, settings: QuantizeSettings, texts: list[str],
                    accelerator: bool) -> dict:
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(default_cpu_workers()))
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    from gptqmodel.quantization import FORMAT, METHOD

    awq = settings.method == "awq"
    config = QuantizeConfig(bits=settings.bits, group_size=settings.group_size or -1, sym=settings.symmetric,
                            method=METHOD.AWQ if awq else METHOD.GPTQ, format=FORMAT.GEMM if awq else FORMAT.GPTQ)
    model = GPTQModel.load(str(model_dir), config, device=None if accelerator else "cpu")
    backend = BACKEND.AWQ_TORCH if awq and not accelerator else BACKEND.AUTO
    model.quantize(texts, batch_size=1, backend=backend)
    model.save(str(out_dir))
    return {"format": "awq-gemm" if awq else "gptq", "backend": str(backend.value if hasattr(backend, "value") else backend)}


def quantize(model_dir: str | Path, *, method: Method, bits: int = 4, group_size: int | None = 128,
             calibration: Sequence[str] | str, out_dir: str | Path, tool: Tool = "auto", num_samples: int = 128,
             max_seq_length: int = 512, symmetric: bool = True) -> Quantization:
    """Quantize ``model_dir`` (a folder or Hub id) into ``out_dir`` (an HF checkpoint plus :data:`RECORD_FILE`).

    ``calibration``: texts, or a benchmark (shipped name, JSONL file or Hub dataset) whose first
    ``num_samples`` problems, rendered through the step prompt with their reference solutions, are
    used. W8A8 ignores ``group_size`` (per-channel weights, per-token dynamic activations).
    """
    from transformers import AutoTokenizer

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if method == "w8a8":
        group_size = None
    check_settings(method, bits, group_size)
    accelerator = has_accelerator()
    chosen = choose_tool(method, tool, accelerator=accelerator)
    if model_dir.exists() and not (model_dir / "config.json").is_file():
        raise InputError(model_dir, "not a model folder (no config.json)")
    texts, name = calibration_texts(calibration, AutoTokenizer.from_pretrained(model_dir), num_samples)
    settings = QuantizeSettings(method, bits, group_size, symmetric, len(texts), max_seq_length)
    out_dir.mkdir(parents=True, exist_ok=True)
    if chosen == "llmcompressor":
        details = _with_llmcompressor(model_dir, out_dir, settings, texts)
    else:
        details = _with_gptqmodel(model_dir, out_dir, settings, texts, accelerator)
    record = Quantization(
        method=method, bits=bits, group_size=group_size, tool=tool_version(chosen), format=details.pop("format"),
        extra={"calibration": name, "calibration_samples": len(texts), "max_seq_length": max_seq_length,
               "symmetric": symmetric, "activation_bits": 8 if method == "w8a8" else None,
               "source_model": model_label(model_dir), **details})
    write_record(out_dir, record)
    return record


# --- loading for generation ---

@dataclass(frozen=True)
class LoadedModel:
    """A model ready for ``generate``, its tokenizer, its label and how it is quantized."""

    model: Any
    tokenizer: Any
    name: str
    quantization: Quantization | None


def model_label(model_dir: str | Path) -> str:
    """A readable model name: the folder name (or the Hub id as given)."""
    path = Path(model_dir)
    return path.name if path.exists() else str(model_dir)


def load_for_generation(model_dir: str | Path, *, device: str | None = None, dtype: str = "auto") -> LoadedModel:
    """Load a full-precision or quantized checkpoint (compressed-tensors, GPTQ, AWQ) with transformers.

    GPTQ and AWQ checkpoints run through GPTQModel's kernels (its torch kernels on CPU); a Hub id
    is downloaded by transformers. ``device``: ``cuda``/``cpu`` (default: cuda when available).
    """
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(default_cpu_workers()))
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if has_accelerator() else "cpu")
    quantization = quantization_of(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, device_map=device)
    model.eval()
    return LoadedModel(model=model, tokenizer=generation_tokenizer(model_dir), name=model_label(model_dir),
                       quantization=quantization)


def generation_tokenizer(model_dir: str | Path) -> Any:
    """The model's tokenizer set up for batched generation: left padding, a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
