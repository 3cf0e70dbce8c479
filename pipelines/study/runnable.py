"""Whether each quantization of a study can generate on this machine, and on which backend, decided before any
work (:func:`refusals`, called by the preflight) with :func:`~quantmedic.pipelines.models.formats.refusal`.

With ``generation.backend: auto``, a variant that vLLM cannot run (an int4 KV cache, NVFP4 before
Blackwell) but the transformers backend can simulate (``simulate: true``) generates with transformers,
while the others keep vLLM (:func:`backend_for`).
"""

from __future__ import annotations

from pathlib import Path

from quantmedic.taxonomy.records import Quantization

from quantmedic.pipelines.models.formats import FORMATS, Hardware, refusal
from quantmedic.pipelines.models.generation import choose_backend
from quantmedic.pipelines.models.quantize import choose_tool

from .config import QuantizationSpec, StudyConfig


def planned_quantization(q: QuantizationSpec, hw: Hardware) -> Quantization:
    """The Quantization a variant's checkpoint will have: read from its ``path`` when that is a local
    checkpoint with a record, else what ``quantize`` will make of its settings here."""
    if q.path and Path(q.path).is_dir():
        from quantmedic.pipelines.models.loading import read_quantization

        try:
            if (record := read_quantization(q.path)) is not None:
                return record
        except (OSError, ValueError):
            pass  # check_model reports a broken checkpoint at its own field
    try:
        tool = choose_tool(q.method, q.tool, accelerator=hw.cuda_capability is not None)
    except ValueError:  # a tool that cannot quantize here: the quantize stage says so; the format is its tool's
        tool = q.tool
    fmt = ("awq-gemm" if q.method == "awq" else "gptq") if tool == "gptqmodel" else "compressed-tensors"
    extra = {"activation_bits": FORMATS[q.method].activation_bits} if FORMATS[q.method].activation_bits else {}
    if q.rotation != "none":
        extra["rotation"] = q.rotation
    return Quantization(method=q.method, bits=q.bits, group_size=q.group_size, format=fmt, kv_cache_dtype=q.kv_cache,
                        extra=extra)


def backend_for(config: StudyConfig, q: QuantizationSpec | None, hw: Hardware) -> str:
    """The backend variant ``q`` (None: the full-precision model) generates with."""
    g = config.generation
    chosen = choose_backend(g.backend, g.base_url)
    if q is None or g.backend != "auto" or chosen != "vllm":
        return chosen
    planned, simulate = planned_quantization(q, hw), q.simulate or g.simulate
    if refusal(planned, "vllm", hw, simulate=simulate) and refusal(planned, "transformers", hw, simulate=simulate) is None:
        return "transformers"
    return chosen


def refusals(config: StudyConfig, hw: Hardware) -> list[tuple[str, str]]:
    """``(field, line)`` for each variant that generates and cannot run here as configured."""
    found = []
    for i, q in enumerate(config.quantizations):
        if not q.has_model:
            continue  # its attempts are read from a file: nothing runs
        planned = planned_quantization(q, hw)
        why = refusal(planned, backend_for(config, q, hw), hw, simulate=q.simulate or config.generation.simulate)
        if why:
            found.append((config.field_of(i), f"{q.label}: {why}"))
    return found
