"""llm-compressor recipes for every method of the low-bit grid, and the one-shot run that applies them.

Every recipe ignores ``lm_head``. Measured on CPU with llm-compressor 0.14.0.1 / compressed-tensors 0.19.0:

- gptq / awq: ``GPTQModifier`` / ``AWQModifier`` + ``QuantizationModifier`` with one config group of
  ``{bits}``-bit int weights (2, 3, 4, 8) in groups of ``group_size`` (-1: per output channel);
  pack-quantized checkpoints.
- w8a8: SmoothQuant (strength 0.8) + ``GPTQModifier(scheme="W8A8")``; fp8: ``QuantizationModifier``
  with ``FP8_DYNAMIC`` (dynamic activation scales: no calibration data is read); nvfp4 / mxfp4:
  ``QuantizationModifier`` with the ``NVFP4`` / ``MXFP4`` presets (NVFP4 calibrates its global scales).
  The fp4 checkpoints are made from the model in bfloat16: compressed-tensors decompresses fp4 weights
  to bfloat16, and a float32 checkpoint then fails its first forward pass in transformers (a dtype
  mismatch), whereas a bfloat16 one loads as is.
- w4a4: ``GPTQModifier(scheme="W4A4")`` (int4 dynamic per-token activations) with the configured group.
- rotation ``spinquant``: ``SpinQuantModifier(rotations=["R1", "R2"], transform_type="hadamard")``,
  fused into the weights; ``quip``: ``QuIPModifier()`` at its defaults (input-side ``v`` rotations,
  random Hadamard, block = the layer's width), which leaves *online* rotations in the checkpoint that
  transformers does not apply on loading: :func:`.loading.apply_online_transforms` adds them back.
- KV cache ``fp8``: ``kv_cache_scheme`` (static per-tensor fp8 scales) in the checkpoint; compressed-tensors
  applies it when transformers loads the checkpoint. The integer KV caches (int8/int4/int3) are **recorded
  only** (``Quantization.kv_cache_dtype``) and simulated at generation: llm-compressor accepts an int
  ``kv_cache_scheme`` and transformers loads it, but no engine runs one (vLLM's KV cache takes fp8) and
  the runtime simulation would quantize the cache a second time.
- method ``none``: KV fp8 alone is a ``QuantizationModifier`` with only ``kv_cache_scheme`` (a dense
  compressed-tensors checkpoint); with an int KV cache the model is copied (``save_pretrained``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

from .loading import has_accelerator
from .quantize_config import QuantizeSettings

IGNORE = ["lm_head"]
PRESETS = {"fp8": "FP8_DYNAMIC", "nvfp4": "NVFP4", "mxfp4": "MXFP4"}
BFLOAT16_METHODS = ("nvfp4", "mxfp4")


def kv_cache_args(kv_cache: str | None) -> Any:
    """The ``kv_cache_scheme`` that goes into the checkpoint (fp8 only; None for the recorded-only int ones)."""
    if kv_cache != "fp8":
        return None
    from compressed_tensors.quantization import QuantizationArgs

    return QuantizationArgs(num_bits=8, type="float", strategy="tensor", dynamic=False, symmetric=True)


def weight_groups(settings: QuantizeSettings) -> dict:
    """One config group of ``bits``-bit int weights (gptq, awq)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    grouped = settings.group_size not in (None, -1)
    weights = QuantizationArgs(num_bits=settings.bits, type="int", symmetric=settings.symmetric,
                               strategy="group" if grouped else "channel",
                               group_size=settings.group_size if grouped else None)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}


def _w4a4_groups(settings: QuantizeSettings) -> dict:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    grouped = settings.group_size not in (None, -1)
    weights = QuantizationArgs(num_bits=4, type="int", symmetric=settings.symmetric,
                               strategy="group" if grouped else "channel",
                               group_size=settings.group_size if grouped else None)
    activations = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="token", dynamic=True)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=weights, input_activations=activations)}


def rotation_modifiers(rotation: str) -> list:
    if rotation == "spinquant":
        from llmcompressor.modifiers.transform import SpinQuantModifier

        return [SpinQuantModifier(rotations=["R1", "R2"], transform_type="hadamard")]
    if rotation == "quip":
        from llmcompressor.modifiers.transform import QuIPModifier

        return [QuIPModifier()]
    return []


def _quantizer(settings: QuantizeSettings) -> list:
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    kv = {"kv_cache_scheme": kv_cache_args(settings.kv_cache)}
    method = settings.method
    if method == "w8a8":
        from llmcompressor.modifiers.transform import SmoothQuantModifier

        return [SmoothQuantModifier(smoothing_strength=0.8),
                GPTQModifier(targets="Linear", scheme="W8A8", ignore=IGNORE, **kv)]
    if method in PRESETS:
        return [QuantizationModifier(targets="Linear", scheme=PRESETS[method], ignore=IGNORE, **kv)]
    if method == "w4a4":
        return [GPTQModifier(config_groups=_w4a4_groups(settings), ignore=IGNORE, **kv)]
    if method == "awq":  # AWQ's scales, then the quantizer that reads them
        from llmcompressor.modifiers.transform import AWQModifier

        return [AWQModifier(), QuantizationModifier(config_groups=weight_groups(settings), ignore=IGNORE, **kv)]
    if method == "none":
        return [QuantizationModifier(kv_cache_scheme=kv["kv_cache_scheme"])] if settings.kv_cache == "fp8" else []
    return [GPTQModifier(config_groups=weight_groups(settings), ignore=IGNORE, **kv)]


def build_recipe(settings: QuantizeSettings) -> list:
    """The modifiers, in order (rotations first); empty when nothing goes into the checkpoint (a copy)."""
    quantizer = _quantizer(settings)
    return rotation_modifiers(settings.rotation) + quantizer if quantizer else []


def needs_calibration(settings: QuantizeSettings) -> bool:
    """Whether the recipe reads calibration data (fp8 weights with dynamic activations do not)."""
    if not build_recipe(settings):
        return False
    return not (settings.method == "fp8" and settings.kv_cache != "fp8" and settings.rotation == "none")


@contextlib.contextmanager
def cpu_awq_workaround() -> Iterator[None]:
    """Without an accelerator, make ``IntermediatesCache.pin_memory`` a no-op while oneshot runs.

    A workaround of an upstream bug in llm-compressor 0.14: AWQ (``modifiers/transform/awq/base.py``)
    calls ``IntermediatesCache.pin_memory`` (``pipelines/cache.py``) unconditionally, and pinning
    raises "Cannot access accelerator device when none is available" on a machine without one.
    Pinning only speeds host-to-device copies, so skipping it changes nothing else. With an
    accelerator, nothing is patched.
    """
    if has_accelerator():
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


def run_oneshot(model_dir: Path, out_dir: Path, settings: QuantizeSettings, texts: list[str]) -> dict:
    """Apply :func:`build_recipe` to ``model_dir`` and save the checkpoint (or a copy) into ``out_dir``;
    the record's details (``format``, ``compressed_format``, ``dtype``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype = "bfloat16" if settings.method in BFLOAT16_METHODS else "auto"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    recipe = build_recipe(settings)
    if not recipe:  # only a recorded (simulated) KV cache: the weights stay as they are
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        return {"format": None, "dtype": str(model.dtype).removeprefix("torch.")}
    from llmcompressor import oneshot

    data: dict[str, Any] = {}
    if needs_calibration(settings):
        from datasets import Dataset

        data = {"dataset": Dataset.from_dict({"text": texts}), "max_seq_length": settings.max_seq_length,
                "num_calibration_samples": len(texts), "shuffle_calibration_samples": False}
    with cpu_awq_workaround():
        oneshot(model=model, processor=tokenizer, recipe=recipe, **data)
    model.save_pretrained(out_dir, save_compressed=True)
    tokenizer.save_pretrained(out_dir)
    qc = json.loads((out_dir / "config.json").read_text())["quantization_config"]
    return {"format": "compressed-tensors", "compressed_format": qc.get("format"),
            "dtype": str(model.dtype).removeprefix("torch.")}
