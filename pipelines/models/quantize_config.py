"""The quantization settings, declared once: ``quantmedic quantize`` takes its options' defaults and
help from :class:`QuantizeSettings`, and each entry of a study config's ``quantizations:`` is one."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .formats import FORMATS, METHODS

Method = Literal["gptq", "awq", "w8a8", "fp8", "nvfp4", "mxfp4", "w4a4", "none"]
Tool = Literal["llmcompressor", "gptqmodel", "auto"]
KVCache = Literal["fp8", "int8", "int4", "int3"]
Rotation = Literal["none", "spinquant", "quip"]
TOOLS: tuple[str, ...] = ("llmcompressor", "gptqmodel", "auto")
FIXED_GROUPS = {"w8a8": None, "fp8": None, "nvfp4": 16, "mxfp4": 32, "none": None}
"""Methods whose format fixes the group size (None: per output channel)."""


def check_settings(method: str, bits: int | None, group_size: int | None, *, tool: str = "auto",
                   rotation: str = "none", kv_cache: str | None = None) -> None:
    """Reject settings no tool here supports (what the format takes: :data:`~.formats.FORMATS`)."""
    fmt = FORMATS[method]
    if method == "none":
        if not kv_cache:
            raise ValueError("method none quantizes nothing: give kv_cache (fp8, int8, int4 or int3)")
        return
    if bits not in fmt.bits:
        if len(fmt.bits) == 1:
            raise ValueError(f"{fmt.title} quantizes weights to {fmt.bits[0]} bits: use --bits {fmt.bits[0]}")
        raise ValueError(f"{method.upper()} takes {', '.join(map(str, fmt.bits[:-1]))} or {fmt.bits[-1]} bits")
    if group_size is not None and group_size != -1 and group_size < 1:
        raise ValueError("group size must be positive, or -1 for one group per output channel")
    if tool == "gptqmodel":
        if "gptqmodel" not in fmt.tools:
            raise ValueError(f"GPTQModel does not make {fmt.title} checkpoints; use --tool llmcompressor")
        if method == "awq" and bits != 4:
            raise ValueError("GPTQModel's AWQ checkpoints are 4-bit; use --tool llmcompressor for other bits")
        if rotation != "none" or kv_cache:
            raise ValueError("rotations and KV-cache quantization are llm-compressor's; use --tool llmcompressor")


class QuantizeSettings(BaseModel):
    """What to quantize and how (recorded in the checkpoint's Quantization)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = Field("gptq", description=(
        "gptq or awq (weight-only), w8a8 (int8 weights and activations, SmoothQuant + GPTQ), fp8 (W8A8 fp8), nvfp4 "
        "or mxfp4 (W4A4 fp4), w4a4 (int4 weights and activations, with a rotation), none (only the KV cache)."))
    bits: int | None = Field(None, ge=2, le=8, description=(
        "Weight bits: 2, 3, 4 or 8 for gptq and awq (default 4); fixed by the other methods."), validate_default=False)
    group_size: int | None = Field(128, description="Weights per quantization group; -1: one per output channel. "
                                                     "Fixed by w8a8, fp8 (per channel), nvfp4 (16) and mxfp4 (32).")
    kv_cache: KVCache | None = Field(None, description=(
        "KV-cache quantization: fp8 (llm-compressor's kv_cache_scheme; vLLM runs it on CUDA), or int8, int4, int3 "
        "(simulated: no engine has kernels)."))
    rotation: Rotation = Field("none", description=(
        "Rotate before quantizing: spinquant (llm-compressor's SpinQuantModifier, R1+R2 Hadamard rotations fused "
        "into the weights) or quip (QuIPModifier, online Hadamard transforms)."))
    simulate: bool = Field(False, description=(
        "Run formats that have no kernel on the hardware at hand simulated (quantize-dequantize in a transformers "
        "forward pass), recorded as such. Without it they are refused before any work."))
    tool: Tool = Field("auto", description="llmcompressor, gptqmodel or auto (llm-compressor; GPTQModel for AWQ "
                                           "without a GPU).")
    calibration: str | tuple[str, ...] = Field("gsm8k", description=(
        "Calibration problems: a shipped benchmark (gsm8k, math500, aime24), a JSONL file or a Hugging Face dataset; "
        "rendered with the step prompt and followed by their reference solutions, or by the model's own generations."))
    calibrate_on: Literal["references", "generations"] = Field("references", description=(
        "What follows each calibration prompt: the problem's reference solution, or the full-precision model's own "
        "generation for it (the recipe of *Quantization Hurts Reasoning?*; generated greedily once, up to "
        "max_seq_length tokens, and kept beside the checkpoint)."))
    num_samples: int = Field(128, ge=1, description="Calibration samples.")
    max_seq_length: int = Field(512, ge=16, description="Calibration tokens per sample.")
    symmetric: bool = True

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_method(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            method = data.get("method", "gptq")
            if data.get("bits") is None and method in FORMATS and method != "none":
                data["bits"] = FORMATS[method].bits[0] if len(FORMATS[method].bits) == 1 else 4
            if method in FIXED_GROUPS:
                data["group_size"] = FIXED_GROUPS[method]
        return data

    @model_validator(mode="after")
    def _supported(self) -> QuantizeSettings:
        check_settings(self.method, self.bits, self.group_size, tool=self.tool, rotation=self.rotation,
                       kv_cache=self.kv_cache)
        return self

    @property
    def label(self) -> str:
        """``gptq-w4-g128``, ``w8a8-w8``, ``w4a4-w4-g128-spinquant``, ``gptq-w4-g128-kvint4``, ``kv-int3``: the
        variant's name in tables and file names."""
        if self.method == "none":
            return f"kv-{self.kv_cache}"
        label = f"{self.method}-w{self.bits}" + (f"-g{self.group_size}" if self.method not in FIXED_GROUPS else "")
        return label + (f"-{self.rotation}" if self.rotation != "none" else "") + (
            f"-kv{self.kv_cache}" if self.kv_cache else "")

    @property
    def activation_bits(self) -> int | None:
        return FORMATS[self.method].activation_bits
