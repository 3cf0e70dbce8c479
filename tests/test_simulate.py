"""Simulated quantization on CPU, for real: a W4A4 checkpoint made by llm-compressor, an int KV cache on the
tiny model, the refusal of a format with no kernel here, and the attempts' ``execution``."""

from __future__ import annotations

import contextlib
import doctest
import io
import sys
from pathlib import Path

import pytest

from quantmedic.pipelines.cli import main
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.models import formats, simulate
from quantmedic.pipelines.models.generation import generate, record_kv_cache
from quantmedic.pipelines.models.generation_config import GenerationSettings
from quantmedic.pipelines.models.loading import load_for_generation, read_quantization
from quantmedic.pipelines.models.quantize import quantize
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import Attempt, Quantization

from .support.tiny_model import calibration_texts, tiny_model

W4A4_REFUSAL = "W4A4 int4 has no real kernels in vLLM; add `simulate: true` (--simulate) to run it simulated"


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_model()


@pytest.fixture(scope="module")
def w4a4(tiny, tmp_path_factory) -> Path:
    """int4 weights (GPTQ, groups of 128) and int4 dynamic per-token activations, as llm-compressor saves them."""
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("w4a4") / "tiny-w4a4"
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype="auto")
    oneshot(model=model, processor=tokenizer, dataset=Dataset.from_dict({"text": calibration_texts(16)}),
            recipe=GPTQModifier(targets="Linear", scheme="W4A4", ignore=["lm_head"]), max_seq_length=256,
            num_calibration_samples=16, shuffle_calibration_samples=False)
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    return out


def _quantmedic(*args: str) -> tuple[int, str]:
    """``quantmedic ARGS`` through the console script's ``main()``: its exit code and its stderr."""
    err, argv = io.StringIO(), sys.argv
    sys.argv = ["quantmedic", *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.argv = argv
    return code, err.getvalue()


def _ids():
    import torch

    return torch.tensor([list(range(40, 72)), list(range(300, 332))])


def _logits(model):
    import torch

    with torch.inference_mode():
        return model(_ids()).logits.float()


def _without_library_activations(model) -> None:
    for module in model.modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is not None:
            module.quantization_scheme = scheme.model_copy(update={"input_activations": None})


def test_w4a4_activations_are_fake_quantized_by_compressed_tensors(w4a4):
    import torch

    record = read_quantization(w4a4)
    assert (record.method, record.bits, record.format) == ("w4a4", 4, "compressed-tensors")
    loaded = load_for_generation(w4a4, device="cpu", simulate=True)
    assert loaded.simulation == ("weights dequantized by compressed-tensors; activations int4 per-token dynamic "
                                 "(compressed-tensors, 14 layers)")
    simulated = _logits(loaded.model)
    # one layer: its output is the dense product of its fake-quantized input (and its dequantized weight)
    layer = loaded.model.model.layers[0].mlp.down_proj
    x = torch.randn(2, 5, layer.in_features)
    expected = torch.nn.functional.linear(simulate.fake_quantize_dynamic(x, simulate.activation_args(record)),
                                          layer.weight, layer.bias)
    with torch.inference_mode():
        assert torch.allclose(layer(x), expected, atol=1e-5)
    assert len(simulate.fake_quantize_dynamic(x, simulate.activation_args(record))[0, 0].unique()) <= 16

    _without_library_activations(loaded.model)  # the same checkpoint, weight-only
    weight_only = _logits(loaded.model)
    assert torch.isfinite(simulated).all() and (simulated - weight_only).abs().max() > 0.1
    # where the library does not quantize activations, the hand-written pre-hooks compute the same numbers
    assert simulate.apply(loaded.model, record) == "activations int4 per-token dynamic (forward pre-hooks, 14 layers)"
    assert torch.equal(_logits(loaded.model), simulated)
    simulate.remove(loaded.model)
    assert torch.equal(_logits(loaded.model), weight_only)


def test_a_coarser_kv_cache_changes_the_outputs_more(tiny):
    import torch

    loaded = load_for_generation(tiny, device="cpu")
    reference = _logits(loaded.model)
    errors = {}
    for kv in ("int8", "int4", "int3", "fp8"):
        done = simulate.apply(loaded.model, Quantization(method="none", kv_cache_dtype=kv))
        assert done.startswith("KV cache ") and "k_proj/v_proj outputs, pre-RoPE, 2 layers" in done
        logits = _logits(loaded.model)
        simulate.remove(loaded.model)
        assert torch.isfinite(logits).all()
        errors[kv] = (logits - reference).abs().mean().item()
    assert 0 < errors["int8"] < errors["int4"] < errors["int3"], errors
    assert 0 < errors["fp8"] < errors["int4"], errors
    assert torch.equal(_logits(loaded.model), reference)  # removed: the model is itself again
    # keys per token and head: int3 leaves at most 8 levels in each head's 64 values
    args = simulate.kv_args("int3", 64)
    k = simulate.fake_quantize_dynamic(torch.randn(1, 3, 128), args)
    assert all(len(k[0, t, h * 64:(h + 1) * 64].unique()) <= 8 for t in range(3) for h in range(2))


def test_w4a4_is_refused_unless_simulated_then_recorded_as_simulated(w4a4, tmp_path):
    problems = load_benchmark("gsm8k", limit=1)
    out = tmp_path / "attempts.jsonl"
    with pytest.raises(InputError) as refused:
        generate(w4a4, problems, out_path=out, backend="transformers", max_tokens=8, device="cpu")
    assert str(refused.value) == f'{w4a4}: field "--simulate": {W4A4_REFUSAL}' and refused.value.is_usage
    assert not out.exists()

    code, said = _quantmedic("generate", str(w4a4), "--benchmark", "gsm8k", "--limit", "1", "--out", str(out),
                             "--backend", "transformers", "--max-tokens", "8")
    assert code == 2 and W4A4_REFUSAL in " ".join(said.split()) and "Traceback" not in said, said
    assert not out.exists()

    summary = generate(w4a4, problems, out_path=out, backend="transformers", max_tokens=8, device="cpu", simulate=True,
                       n=2, temperature=0.7)
    (first, second) = read_records(out, Attempt)
    assert summary.written == 2
    for attempt in (first, second):
        q = attempt.quantization
        assert q.execution == "simulated" and "activations int4 per-token dynamic" in q.extra["simulation"]
        assert q.model_copy(update={"execution": None, "extra": {k: v for k, v in q.extra.items()
                                                                 if k != "simulation"}}) == read_quantization(w4a4)
    again = generate(w4a4, problems, out_path=out, backend="transformers", max_tokens=8, device="cpu", simulate=True,
                     n=2, temperature=0.7)
    assert (again.written, again.skipped) == (0, 1)  # resumes: nothing left to do


def test_weight_only_gptq_under_transformers_is_marked_simulated(tiny, tmp_path):
    out = tmp_path / "gptq"
    record = quantize(tiny, method="gptq", bits=4, calibration=calibration_texts(8), out_dir=out,
                      tool="llmcompressor", num_samples=8, max_seq_length=128)
    generate(out, load_benchmark("gsm8k", limit=1), out_path=tmp_path / "a.jsonl", backend="transformers",
             max_tokens=6, device="cpu")
    (attempt,) = read_records(tmp_path / "a.jsonl", Attempt)
    assert attempt.quantization == record.model_copy(update={
        "execution": "simulated", "extra": {**record.extra, "simulation": "weights dequantized by compressed-tensors"}})
    # GPTQModel's own checkpoints run on its kernels (tests/test_quantize.py generates with one)
    gptqmodel = Quantization(method="gptq", bits=4, format="gptq", tool="gptqmodel 7.6.0")
    assert formats.execution(gptqmodel, "transformers", formats.Hardware()) == ("real kernels", None)


def test_a_records_fp8_kv_cache_goes_to_vllm_and_int_kv_caches_need_simulate():
    fp8 = Quantization(method="gptq", bits=4, kv_cache_dtype="fp8")
    assert record_kv_cache(fp8, GenerationSettings(), "vllm") == "fp8"
    assert record_kv_cache(fp8, GenerationSettings(kv_cache_dtype="auto"), "vllm") == "auto"
    assert record_kv_cache(fp8, GenerationSettings(), "transformers") is None
    int3 = Quantization(method="none", kv_cache_dtype="int3")
    assert formats.refusal(int3, "transformers", formats.Hardware(), simulate=True) is None
    assert "simulate: true" in formats.refusal(int3, "transformers", formats.Hardware(), simulate=False)


def test_the_formats_doctests_pass():
    result = doctest.testmod(formats)
    assert result.attempted >= 6 and result.failed == 0
