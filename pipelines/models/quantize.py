"""Quantizing a model into any format of the low-bit grid (:mod:`.formats`) with llm-compressor or GPTQModel.

``quantize`` writes :data:`~quantmedic.pipelines.models.loading.RECORD_FILE` (a serialised
Quantization) beside the checkpoint, so the settings travel into every Attempt generated from it
(``loading.read_quantization`` reads it back, or infers one for checkpoints made elsewhere).

Tools: llm-compressor writes compressed-tensors for every method (its recipes: :mod:`.recipes`);
GPTQModel writes GPTQ (any bits) and AWQ (GEMM, 4 bits) checkpoints. ``tool="auto"`` picks
llm-compressor except for a plain 4-bit AWQ without an accelerator, where GPTQModel's AWQ is used
(llm-compressor's AWQ runs on CPU only through :func:`.recipes.cpu_awq_workaround`).

Calibration on the model's own generations (``calibrate_on: generations``): the full-precision
model answers the calibration problems greedily (transformers backend, up to ``max_seq_length``
tokens) into a temporary file first (the output folder is checked before anything is written, so
nothing lands there before the checkpoint); the file is moved into the checkpoint folder as
:data:`GENERATIONS_FILE` once the checkpoint is saved.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from quantmedic.judge.step_format import render_prompt, trace_text
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.taxonomy.outputs import check_output_folder
from quantmedic.taxonomy.records import Attempt, Problem, Quantization

from .formats import FORMATS
from .loading import RECORD_FILE, check_model, checkpoint_name, default_cpu_workers, has_accelerator
from .quantize_config import METHODS, TOOLS, QuantizeSettings

_DISTRIBUTIONS = {"llmcompressor": ("llm-compressor", "llmcompressor"), "gptqmodel": ("gptqmodel", "gptqmodel")}
GENERATIONS_FILE = "calibration-generations.jsonl"
"""The full-precision model's calibration generations, kept beside a checkpoint calibrated on them."""


# --- choosing a tool (pure) ---

def choose_tool(method: str, tool: str, *, accelerator: bool, bits: int | None = 4, plain: bool = True) -> str:
    """The tool that will quantize: ``tool`` itself, or for ``auto`` the one that works here
    (``plain``: no rotation and no KV-cache quantization, which are llm-compressor's).

    >>> choose_tool("awq", "auto", accelerator=False), choose_tool("awq", "auto", accelerator=True)
    ('gptqmodel', 'llmcompressor')
    >>> choose_tool("gptq", "auto", accelerator=False), choose_tool("awq", "auto", accelerator=False, bits=3)
    ('llmcompressor', 'llmcompressor')
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r}; choose one of {', '.join(TOOLS)}")
    if tool == "auto":
        gptqmodel = method == "awq" and bits == 4 and plain and not accelerator
        return "gptqmodel" if gptqmodel else "llmcompressor"
    if tool == "gptqmodel" and "gptqmodel" not in FORMATS[method].tools:
        raise ValueError(f"GPTQModel does not make {FORMATS[method].title.replace('{bits}', 'N')} checkpoints; "
                         "use --tool llmcompressor")
    return tool


def tool_version(tool: str) -> str:
    """'llm-compressor 0.14.0.1', 'gptqmodel 7.6.0'."""
    label, distribution = _DISTRIBUTIONS[tool]
    return f"{label} {importlib.metadata.version(distribution)}"


# --- calibration data ---

def calibration_texts(calibration: Sequence[str] | str, tokenizer: Any, num_samples: int,
                      problems: Sequence[Problem] | None = None,
                      generations: Sequence[Attempt] | None = None) -> tuple[list[str], str]:
    """``(texts, name)``: the given texts, or a benchmark's problems (shipped name, JSONL file or
    Hugging Face dataset, read by ``load_benchmark`` unless already given as ``problems``) rendered
    through the step prompt and followed by their reference solutions, so calibration looks like generation;
    or, given ``generations`` (the model's own attempts at them), by those (name ``generations:<benchmark>``)."""
    if not isinstance(calibration, str):
        if generations is not None:
            raise ValueError("calibrate_on generations needs calibration problems (a benchmark), not texts")
        texts = [t for t in calibration if t.strip()][:num_samples]
        name = "custom"
    elif generations is not None:
        texts = [render_prompt(tokenizer, a.problem) + trace_text(a) for a in generations][:num_samples]
        name = f"generations:{calibration}"
    else:
        problems = problems if problems is not None else load_benchmark(calibration, limit=num_samples)
        texts = [render_prompt(tokenizer, p) + (p.reference_solution or p.reference_answer or "") for p in problems]
        name = calibration
    if not texts:
        raise ValueError("no calibration texts")
    return texts, name


def generate_calibration(model_dir: Path, problems: Sequence[Problem], settings: QuantizeSettings,
                         out_path: Path) -> list[Attempt]:
    """The full-precision model's greedy answers to ``problems`` (up to ``max_seq_length`` tokens) in ``out_path``."""
    from quantmedic.taxonomy.jsonl import read_records

    from .generation import generate

    generate(model_dir, problems, out_path=out_path, backend="transformers", temperature=0.0,
             max_tokens=settings.max_seq_length)
    return read_records(out_path, Attempt)


# --- the record ---

def write_record(out_dir: str | Path, quantization: Quantization) -> Path:
    path = Path(out_dir) / RECORD_FILE
    path.write_text(quantization.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def build_record(s: QuantizeSettings, tool: str, name: str, samples: int, model_dir: Path, details: dict) -> Quantization:
    """The Quantization of a checkpoint made with ``s`` (``execution`` is left to generation)."""
    details = dict(details)
    return Quantization(
        method=s.method, bits=s.bits, group_size=s.group_size, tool=tool_version(tool), format=details.pop("format"),
        kv_cache_dtype=s.kv_cache,
        extra={"calibration": name, "calibrate_on": s.calibrate_on, "calibration_samples": samples,
               "max_seq_length": s.max_seq_length, "symmetric": s.symmetric, "activation_bits": s.activation_bits,
               "rotation": s.rotation, "simulate": s.simulate, "source_model": checkpoint_name(model_dir), **details})


# --- quantizing ---

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
    ``num_samples`` problems, rendered through the step prompt with their reference solutions (or,
    with ``calibrate_on="generations"``, the model's own greedy answers, kept as :data:`GENERATIONS_FILE`),
    are used. W8A8 and fp8 ignore ``group_size`` (per-channel weights, per-token dynamic activations).
    """
    s = settings or QuantizeSettings(**fields)
    on_generations = s.calibrate_on == "generations"
    if on_generations and not isinstance(s.calibration, str):
        raise ValueError("calibrate_on generations needs calibration problems (a benchmark), not texts")
    check_model(model_dir)  # the model, the output and the calibration data before anything heavy
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_output_folder(out_dir, inputs=[model_dir], what="quantized checkpoint")
    problems = load_benchmark(s.calibration, limit=s.num_samples) if isinstance(s.calibration, str) else None
    accelerator = has_accelerator()
    chosen = choose_tool(s.method, s.tool, accelerator=accelerator, bits=s.bits,
                         plain=s.rotation == "none" and not s.kv_cache)
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="quantmedic-calibration-") as scratch:
        generated = Path(scratch) / GENERATIONS_FILE
        attempts = generate_calibration(model_dir, problems, s, generated) if on_generations else None
        texts, name = calibration_texts(s.calibration, AutoTokenizer.from_pretrained(model_dir), s.num_samples,
                                        problems, attempts)
        out_dir.mkdir(parents=True, exist_ok=True)
        if chosen == "llmcompressor":
            from .recipes import needs_calibration, run_oneshot

            details = run_oneshot(model_dir, out_dir, s, texts)
            samples = len(texts) if needs_calibration(s) else 0
        else:
            details, samples = _with_gptqmodel(model_dir, out_dir, s, texts, accelerator), len(texts)
        if on_generations:
            shutil.move(str(generated), out_dir / GENERATIONS_FILE)
            details["calibration_generations"] = GENERATIONS_FILE
    record = build_record(s, chosen, name, samples, model_dir, details)
    write_record(out_dir, record)
    return record
