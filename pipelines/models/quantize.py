"""Quantizing a model (GPTQ, AWQ, W8A8) with llm-compressor or GPTQModel.

``quantize`` writes :data:`~quantmedic.pipelines.models.loading.RECORD_FILE` (a serialised
Quantization) beside the checkpoint, so the settings travel into every Attempt generated from it
(``loading.read_quantization`` reads it back, or infers one for checkpoints made elsewhere).

Tools: llm-compressor writes compressed-tensors (GPTQ W{bits}A16; W8A8 = SmoothQuant + GPTQ);
GPTQModel writes GPTQ and AWQ (GEMM) checkpoints. ``tool="auto"`` picks llm-compressor except for
AWQ without an accelerator, where llm-compressor 0.14 fails (an unconditional ``pin_memory()``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any, Sequence

from quantmedic.judge.step_format import render_prompt
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.taxonomy.outputs import check_output_folder
from quantmedic.taxonomy.records import Problem, Quantization

from .loading import RECORD_FILE, check_model, checkpoint_name, default_cpu_workers, has_accelerator
from .quantize_config import METHODS, TOOLS, QuantizeSettings

_DISTRIBUTIONS = {"llmcompressor": ("llm-compressor", "llmcompressor"), "gptqmodel": ("gptqmodel", "gptqmodel")}


# --- choosing a tool and checking settings (pure) ---

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


def tool_version(tool: str) -> str:
    """'llm-compressor 0.14.0.1', 'gptqmodel 7.6.0'."""
    label, distribution = _DISTRIBUTIONS[tool]
    return f"{label} {importlib.metadata.version(distribution)}"


# --- calibration data ---

def calibration_texts(calibration: Sequence[str] | str, tokenizer: Any, num_samples: int,
                      problems: Sequence[Problem] | None = None) -> tuple[list[str], str]:
    """``(texts, name)``: the given texts, or a benchmark's problems (shipped name, JSONL file or
    Hugging Face dataset, read by ``load_benchmark`` unless already given as ``problems``) rendered
    through the step prompt and followed by their reference solutions, so calibration looks like generation."""
    if not isinstance(calibration, str):
        texts = [t for t in calibration if t.strip()][:num_samples]
        name = "custom"
    else:
        problems = problems if problems is not None else load_benchmark(calibration, limit=num_samples)
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


# --- quantizing ---

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


def quantize(model_dir: str | Path, *, out_dir: str | Path, settings: QuantizeSettings | None = None,
             **fields: Any) -> Quantization:
    """Quantize ``model_dir`` (a folder or Hub id) into ``out_dir`` (an HF checkpoint plus :data:`RECORD_FILE`).

    ``settings`` (or its fields as keyword arguments): see :class:`QuantizeSettings`. Its
    ``calibration``: texts, or a benchmark (shipped name, JSONL file or Hub dataset) whose first
    ``num_samples`` problems, rendered through the step prompt with their reference solutions, are
    used. W8A8 ignores ``group_size`` (per-channel weights, per-token dynamic activations).
    """
    s = settings or QuantizeSettings(**fields)
    check_model(model_dir)  # the model, the output and the calibration data before anything heavy
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_output_folder(out_dir, inputs=[model_dir], what="quantized checkpoint")
    problems = load_benchmark(s.calibration, limit=s.num_samples) if isinstance(s.calibration, str) else None
    from transformers import AutoTokenizer

    accelerator = has_accelerator()
    chosen = choose_tool(s.method, s.tool, accelerator=accelerator)
    texts, name = calibration_texts(s.calibration, AutoTokenizer.from_pretrained(model_dir), s.num_samples, problems)
    out_dir.mkdir(parents=True, exist_ok=True)
    if chosen == "llmcompressor":
        details = _with_llmcompressor(model_dir, out_dir, s, texts)
    else:
        details = _with_gptqmodel(model_dir, out_dir, s, texts, accelerator)
    record = Quantization(
        method=s.method, bits=s.bits, group_size=s.group_size, tool=tool_version(chosen), format=details.pop("format"),
        extra={"calibration": name, "calibration_samples": len(texts), "max_seq_length": s.max_seq_length,
               "symmetric": s.symmetric, "activation_bits": 8 if s.method == "w8a8" else None,
               "source_model": checkpoint_name(model_dir), **details})
    write_record(out_dir, record)
    return record
