"""The low-bit grid's rules (pure): which format runs on real kernels where, what is only simulated,
what is refused and in which words; and the README's table is the registry's."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantmedic.pipelines.models.formats import FORMATS, REAL, SIMULATED, Hardware, execution, markdown_table, refusal
from quantmedic.pipelines.models.quantize_config import QuantizeSettings
from quantmedic.taxonomy.records import Quantization

README = Path(__file__).resolve().parents[1] / "README.md"
H200, B200, CPU512, CPU = Hardware((9, 0)), Hardware((10, 0)), Hardware(cpu_flags=frozenset({"avx512f"})), Hardware()


def record(method: str, bits: int | None = None, kv: str | None = None, fmt: str = "compressed-tensors",
           **extra) -> Quantization:
    return Quantization(method=method, bits=bits, format=fmt, kv_cache_dtype=kv, extra=extra)


def test_the_readme_table_is_the_registry():
    assert markdown_table() in README.read_text(encoding="utf-8")


def test_every_method_is_a_quantize_setting_with_its_bits():
    for method, fmt in FORMATS.items():
        for bits in fmt.bits:
            assert QuantizeSettings(method=method, bits=bits).bits == bits
    assert QuantizeSettings(method="none", kv_cache="int3").label == "kv-int3"


@pytest.mark.parametrize("q, hw, backend, how", [
    (record("gptq", 4), H200, "vllm", REAL),
    (record("gptq", 3), H200, "vllm", None),                      # compressed-tensors WNA16: 4 and 8 bits
    (record("gptq", 3, fmt="gptq"), H200, "vllm", REAL),          # GPTQModel's GPTQ format: vLLM's gptq kernels
    (record("gptq", 3, fmt="gptq"), CPU, "transformers", REAL),   # GPTQModel's torch kernels
    (record("gptq", 4), CPU512, "vllm", REAL),
    (record("gptq", 4), CPU, "vllm", None),                       # no AVX-512: no cpu_gemm_wna16
    (record("gptq", 4), CPU, "transformers", SIMULATED),          # dequantized by compressed-tensors
    (record("w8a8", 8), CPU512, "vllm", REAL),
    (record("w8a8", 8), CPU, "vllm", None),
    (record("fp8", 8), H200, "vllm", REAL),
    (record("fp8", 8), Hardware((8, 0)), "vllm", None),
    (record("nvfp4", 4), B200, "vllm", REAL),
    (record("nvfp4", 4), H200, "vllm", None),
    (record("nvfp4", 4), H200, "transformers", SIMULATED),
    (record("w4a4", 4), B200, "vllm", None),
    (record("none", kv="fp8"), CPU, "vllm", REAL),
    (record("none", kv="int3"), H200, "vllm", None),
    (record("gptq", 4, kv="int4"), H200, "transformers", SIMULATED),
])
def test_where_each_format_runs(q, hw, backend, how):
    assert execution(q, backend, hw)[0] == how


def test_a_served_model_and_full_precision_record_no_execution():
    assert execution(record("nvfp4", 4), "openai", CPU) == (None, None)
    assert execution(None, "vllm", H200) == (None, None)
    assert refusal(record("nvfp4", 4), "openai", CPU, simulate=False) is None


def test_refusals_say_what_would_work():
    assert refusal(record("nvfp4", 4), "transformers", H200, simulate=False) == (
        "W4A4 nvfp4 needs a Blackwell GPU for real kernels; add `simulate: true` (--simulate) to run it simulated")
    kv3 = refusal(record("none", kv="int3"), "vllm", H200, simulate=False)
    assert kv3.startswith("an int3 KV cache has no real kernels") and "use the transformers backend" in kv3
    assert refusal(record("none", kv="int3"), "transformers", CPU, simulate=True) is None
    # weight-only formats run dequantized without asking: same numbers, marked simulated
    assert refusal(record("gptq", 3), "transformers", CPU, simulate=False) is None
    assert "AVX-512" in refusal(record("gptq", 4), "vllm", CPU, simulate=False)


def test_formats_transformers_runs_itself_are_real():
    assert execution(record("bitsandbytes", 4, fmt="bitsandbytes"), "transformers", CPU) == (REAL, None)
    assert execution(record("awq", 4, fmt="awq-gemm"), "transformers", CPU) == (REAL, None)
    how, why = execution(record("gptq", 4, kv="int4"), "transformers", CPU)
    assert how == SIMULATED and "int4 KV cache" in why
