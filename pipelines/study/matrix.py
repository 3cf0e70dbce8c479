"""The study matrix: ``matrix:`` (methods × bits × KV-cache settings) expanded into quantizations, and
``seeds:`` (each extra seed generates the full-precision side and every cell again, and compares them).

A cell is one :class:`~quantmedic.pipelines.models.quantize_config.QuantizeSettings`; the bits axis
applies to the methods that take several bit-widths (GPTQ, AWQ), a method whose format fixes its
bits (W8A8, FP8, NVFP4, ...) makes one cell per KV setting, and ``method: none`` (the KV cache only)
makes no cell without a KV setting. Seed stages are named ``generate:fp@s1``, ``generate:LABEL@s1``,
``compare:LABEL@s1`` (:func:`.layout.seed_label`); the primary seed's stages keep their plain names.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from quantmedic.pipelines.models.formats import FORMATS
from quantmedic.pipelines.models.quantize_config import KVCache, QuantizeSettings

class MatrixSpec(BaseModel):
    """``methods`` × ``bits`` × ``kv_cache``, each cell with the common ``settings``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    methods: list[str | dict[str, Any]] = Field(min_length=1, description=(
        "Method names (gptq, awq, w8a8, fp8, nvfp4, mxfp4, w4a4, none), or mappings of quantize settings, e.g. "
        "{method: w4a4, rotation: spinquant}; a mapping's own bits or kv_cache replace that axis for it."))
    bits: list[int | None] = Field([None], min_length=1, description=(
        "Weight bits, for the methods that take several (gptq, awq); the others make one cell (default: the "
        "method's default bits)."))
    kv_cache: list[KVCache | None] = Field([None], min_length=1, description="KV-cache settings (null: none).")
    settings: dict[str, Any] = Field(default_factory=dict, description=(
        "Quantize settings common to every cell (group_size, tool, calibration, num_samples, simulate, ...)."))

    @field_validator("methods")
    @classmethod
    def _methods_named(cls, methods: list) -> list:
        for m in methods:
            if isinstance(m, dict) and "method" not in m:
                raise ValueError("a method given as a mapping names its method: {method: w4a4, rotation: spinquant}")
            if isinstance(m, dict) and "name" in m:
                raise ValueError("matrix cells are named by their settings; give a named variant in quantizations")
        return methods

    @field_validator("settings")
    @classmethod
    def _settings_known(cls, settings: dict) -> dict:
        unknown = set(settings) - set(QuantizeSettings.model_fields)
        if unknown:
            raise ValueError(f"not a quantize setting: {', '.join(sorted(unknown))}")
        for axis in ("method", "bits", "kv_cache"):
            if axis in settings:
                raise ValueError(f"{axis} is an axis of the matrix, not a common setting")
        return settings


def expand_matrix(matrix: MatrixSpec) -> list[dict[str, Any]]:
    """The cells of ``matrix``, in order (method, then bits, then KV cache), as quantize-settings mappings.

    >>> cells = expand_matrix(MatrixSpec(methods=["gptq", "w8a8", "none"], bits=[3, 4], kv_cache=[None, "int4"],
    ...                                  settings={"simulate": True}))
    >>> [QuantizeSettings(**c).label for c in cells]  # doctest: +NORMALIZE_WHITESPACE
    ['gptq-w3-g128', 'gptq-w3-g128-kvint4', 'gptq-w4-g128', 'gptq-w4-g128-kvint4', 'w8a8-w8', 'w8a8-w8-kvint4',
     'kv-int4']
    >>> cells[1]
    {'simulate': True, 'method': 'gptq', 'bits': 3, 'kv_cache': 'int4'}
    """
    cells = []
    for entry in matrix.methods:
        given = {"method": entry} if isinstance(entry, str) else dict(entry)
        fmt = FORMATS.get(given["method"])
        several = fmt is not None and len(fmt.bits) > 1
        bits_axis = [given.pop("bits")] if "bits" in given else (matrix.bits if several else [None])
        kv_axis = [given.pop("kv_cache")] if "kv_cache" in given else matrix.kv_cache
        for bits in dict.fromkeys(bits_axis):
            for kv in dict.fromkeys(kv_axis):
                if given["method"] == "none" and kv is None:
                    continue  # nothing quantized: that is the full-precision model
                cell = {**matrix.settings, **given}
                cell.update({k: v for k, v in (("bits", bits), ("kv_cache", kv)) if v is not None})
                cells.append(cell)
    return cells

