"""The quantization settings, declared once: ``quantmedic quantize`` takes its options' defaults and
help from :class:`QuantizeSettings`, and each entry of a study config's ``quantizations:`` is one."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Method = Literal["gptq", "awq", "w8a8"]
Tool = Literal["llmcompressor", "gptqmodel", "auto"]
METHODS: tuple[str, ...] = ("gptq", "awq", "w8a8")
TOOLS: tuple[str, ...] = ("llmcompressor", "gptqmodel", "auto")


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


class QuantizeSettings(BaseModel):
    """What to quantize and how (recorded in the checkpoint's Quantization)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = Field("gptq", description="gptq, awq or w8a8 (SmoothQuant + GPTQ, 8-bit weights and "
                                               "activations).")
    bits: int = Field(None, ge=2, le=8, description="Weight bits (default 4; 8 for w8a8).",  # type: ignore[assignment]
                      validate_default=False)
    group_size: int | None = Field(128, description="Weights per quantization group; -1: one per output channel. "
                                                     "Ignored by w8a8.")
    tool: Tool = Field("auto", description="llmcompressor, gptqmodel or auto (llm-compressor; GPTQModel for AWQ "
                                           "without a GPU).")
    calibration: str | tuple[str, ...] = Field("gsm8k", description=(
        "Calibration problems: a shipped benchmark (gsm8k, math500, aime24), a JSONL file or a Hugging Face dataset; "
        "rendered with the step prompt and their reference solutions."))
    num_samples: int = Field(128, ge=1, description="Calibration samples.")
    max_seq_length: int = Field(512, ge=16, description="Calibration tokens per sample.")
    symmetric: bool = True

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_method(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if data.get("bits") is None:
                data["bits"] = 8 if data.get("method") == "w8a8" else 4
            if data.get("method") == "w8a8":
                data["group_size"] = None  # per-channel weights, per-token dynamic activations
        return data

    @model_validator(mode="after")
    def _supported(self) -> QuantizeSettings:
        check_settings(self.method, self.bits, self.group_size)
        return self

    @property
    def label(self) -> str:
        """``gptq-w4-g128``, ``w8a8-w8``: the variant's name in tables and file names."""
        return f"{self.method}-w{self.bits}" + (f"-g{self.group_size}" if self.method != "w8a8" else "")
