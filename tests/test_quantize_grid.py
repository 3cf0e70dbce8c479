"""The low-bit grid on the tiny model, on CPU: every method and bit width quantizes with llm-compressor
(AWQ through its CPU workaround), records its settings, loads in plain transformers and computes finite
logits that differ from the full-precision model's; calibration on the model's own generations; two
calibrations told apart in a comparison; bad settings refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from quantmedic.pipelines.cli.models import commands
from quantmedic.pipelines.evaluation.compare import compare
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.evaluation.grading import grade_file
from quantmedic.pipelines.models.formats import needs_real_or_simulate
from quantmedic.pipelines.models.generation import generate
from quantmedic.pipelines.models.loading import RECORD_FILE, apply_online_transforms, load_for_generation, read_quantization
from quantmedic.pipelines.models.quantize import GENERATIONS_FILE, choose_tool, quantize
from quantmedic.pipelines.models.recipes import build_recipe
from quantmedic.pipelines.models.quantize_config import QuantizeSettings
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import Attempt, Problem, Quantization

from .support.tiny_model import calibration_texts, tiny_model

GRID = {  # name: settings (tool llmcompressor throughout)
    **{f"gptq-w{b}": {"method": "gptq", "bits": b} for b in (2, 3, 4, 8)},
    **{f"awq-w{b}": {"method": "awq", "bits": b} for b in (2, 3, 4, 8)},
    "w8a8": {"method": "w8a8"}, "fp8": {"method": "fp8"}, "nvfp4": {"method": "nvfp4"}, "mxfp4": {"method": "mxfp4"},
    "w4a4": {"method": "w4a4"}, "w4a4-spinquant": {"method": "w4a4", "rotation": "spinquant"},
    "gptq-w4-quip": {"method": "gptq", "bits": 4, "rotation": "quip"},
    "gptq-w4-kvfp8": {"method": "gptq", "bits": 4, "kv_cache": "fp8"},
    "awq-w4-kvint4": {"method": "awq", "bits": 4, "kv_cache": "int4"},
    "kv-int3": {"method": "none", "kv_cache": "int3"},
}
INT_WEIGHTS = ("gptq", "awq", "w8a8", "w4a4")
FP4 = {"nvfp4": 16, "mxfp4": 32}  # their fixed groups: at most 16 fp4 values (times one scale) each
IDS = [[1, 2, 3, 4, 5, 6, 7, 8]]


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_model()


@pytest.fixture(scope="module")
def reference(tiny):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny)
    with torch.no_grad():
        return model, model(torch.tensor(IDS)).logits


@pytest.fixture(scope="module")
def grid(tiny, tmp_path_factory):
    root, made = tmp_path_factory.mktemp("grid"), {}

    def get(name: str) -> tuple[Path, Quantization]:
        if name not in made:
            out = root / name
            made[name] = out, quantize(tiny, out_dir=out, calibration=calibration_texts(8), num_samples=8,
                                       max_seq_length=128, tool="llmcompressor", **GRID[name])
        return made[name]

    return get


def _down_proj(model):  # 512 inputs: four groups of 128
    return model.model.layers[0].mlp.down_proj


def _check_record(name: str, record: Quantization, out: Path, tiny: Path) -> None:
    s = QuantizeSettings(tool="llmcompressor", **GRID[name])
    assert (record.method, record.bits, record.group_size, record.kv_cache_dtype) == \
        (s.method, s.bits, s.group_size, s.kv_cache)
    assert record.tool.startswith("llm-compressor ") and record.execution is None
    assert record.format == (None if name == "kv-int3" else "compressed-tensors")
    extra = record.extra
    assert (extra["rotation"], extra["simulate"], extra["activation_bits"], extra["calibrate_on"]) == \
        (s.rotation, False, s.activation_bits, "references")
    assert extra["calibration"] == "custom" and extra["max_seq_length"] == 128 and extra["symmetric"] is True
    assert extra["calibration_samples"] == (0 if name in ("fp8", "kv-int3") else 8)
    assert extra["source_model"] == tiny.name
    assert read_quantization(out) == record == Quantization.model_validate_json((out / RECORD_FILE).read_text())


def _check_weights(name: str, model, dense) -> None:
    method, bits = GRID[name]["method"], QuantizeSettings(**GRID[name]).bits
    weight = _down_proj(model).weight.detach().float()
    if method == "none":
        assert weight.equal(dense)
        return
    assert not weight.equal(dense)
    if method in INT_WEIGHTS:  # rotations are fused into the weights before they are quantized
        width = 128 if method in ("gptq", "awq", "w4a4") else weight.shape[1]
        assert all(len(row[i:i + width].unique()) <= 2 ** bits for row in weight[:8] for i in range(0, 512, width))
    elif method in FP4:
        width = FP4[method]
        assert all(len(row[i:i + width].unique()) <= 16 for row in weight[:8] for i in range(0, 512, width))
    elif method == "fp8":
        assert all(len(row.unique()) <= 256 for row in weight[:8])


@pytest.mark.parametrize("name", list(GRID))
def test_every_format_generates_and_grades_simulated_on_cpu(name, grid, tmp_path):
    """The grid's cells as the study runs them here: transformers on CPU, simulated, graded; a format that
    quantizes activations or the KV cache is refused without ``simulate`` (nothing written)."""
    out, record = grid(name)
    problems, path = load_benchmark("gsm8k", limit=2), tmp_path / "attempts.jsonl"
    if needs_real_or_simulate(record):
        with pytest.raises(InputError, match="simulate: true"):
            generate(out, problems, out_path=path, backend="transformers", max_tokens=12, device="cpu")
        assert not path.exists()
    generate(out, problems, out_path=path, backend="transformers", max_tokens=12, device="cpu", simulate=True)
    grade_file(path)
    attempts = read_records(path, Attempt)
    assert len(attempts) == 2 and all(a.grading is not None and a.correct in (True, False) for a in attempts)
    for attempt in attempts:
        q = attempt.quantization
        assert q.execution == "simulated" and q.extra["simulation"]
        assert q.model_copy(update={"execution": None, "extra": {k: v for k, v in q.extra.items()
                                                                 if k != "simulation"}}) == record
        if record.kv_cache_dtype in ("int4", "int3"):
            assert f"{record.kv_cache_dtype[-1]}-bit" in q.extra["simulation"] or record.kv_cache_dtype in \
                q.extra["simulation"]


def test_the_loader_applies_quips_online_rotations(grid, reference):
    import torch

    out, _ = grid("gptq-w4-quip")
    loaded = load_for_generation(out, device="cpu")
    with torch.no_grad():
        error = (loaded.model(torch.tensor(IDS)).logits.float() - reference[1]).abs().max()
    assert error < 8, error  # unrotated it is ~24, rotated ~2.1 (test below)


@pytest.mark.parametrize("name", list(GRID))
def test_every_format_quantizes_records_and_loads_in_transformers(name, grid, tiny, reference):
    import torch
    from transformers import AutoModelForCausalLM

    out, record = grid(name)
    _check_record(name, record, out, tiny)
    config = json.loads((out / "config.json").read_text())
    kv_scheme = (config.get("quantization_config") or {}).get("kv_cache_scheme")
    assert (kv_scheme or {}).get("type") == ("float" if GRID[name].get("kv_cache") == "fp8" else None)
    model = AutoModelForCausalLM.from_pretrained(out)  # dtype from the config: bfloat16 for nvfp4/mxfp4
    with torch.no_grad():
        unrotated = model(torch.tensor(IDS)).logits.float()
        assert apply_online_transforms(model, out) == (GRID[name].get("rotation") == "quip")
        logits = model(torch.tensor(IDS)).logits.float()
    dense_model, dense_logits = reference
    if GRID[name].get("rotation") == "quip":  # without its online rotations a QuIP checkpoint is far off
        assert (logits - dense_logits).abs().max() * 3 < (unrotated - dense_logits).abs().max()
    assert torch.isfinite(logits).all()
    if name != "kv-int3":  # a recorded int KV cache is simulated at generation, not in the checkpoint
        assert not torch.allclose(logits, dense_logits, atol=1e-4)
    bits = QuantizeSettings(**GRID[name]).bits  # measured: 16.8 (gptq-w2), 2-6 (4-bit), 0.2-1.0 (8-bit)
    assert (logits - dense_logits).abs().max() < {None: 1e-4, 2: 30, 3: 20, 4: 10, 8: 2}[bits]
    _check_weights(name, model, _down_proj(dense_model).weight.detach())


def test_int_kv_caches_are_recorded_not_written_and_fp8_needs_no_data():
    assert all(getattr(m, "kv_cache_scheme", None) is None
               for m in build_recipe(QuantizeSettings(method="awq", bits=4, kv_cache="int4")))
    assert build_recipe(QuantizeSettings(method="none", kv_cache="int8")) == []
    assert type(build_recipe(QuantizeSettings(method="none", kv_cache="fp8"))[0]).__name__ == "QuantizationModifier"
    assert [type(m).__name__ for m in build_recipe(QuantizeSettings(method="w4a4", rotation="spinquant"))] == \
        ["SpinQuantModifier", "GPTQModifier"]
    assert choose_tool("awq", "auto", accelerator=False, bits=4, plain=False) == "llmcompressor"
    assert choose_tool("awq", "llmcompressor", accelerator=False) == "llmcompressor"


def test_calibration_on_the_models_own_generations(tiny, tmp_path):
    out = tmp_path / "gen"
    record = quantize(tiny, out_dir=out, method="gptq", bits=4, calibration="gsm8k", calibrate_on="generations",
                      num_samples=2, max_seq_length=32, tool="llmcompressor")
    assert record.extra["calibration"] == "generations:gsm8k" and record.extra["calibrate_on"] == "generations"
    assert record.extra["calibration_samples"] == 2 and record.extra["calibration_generations"] == GENERATIONS_FILE
    attempts = read_records(out / GENERATIONS_FILE, Attempt)
    assert len(attempts) == 2 and all(a.quantization is None and 0 < a.completion_tokens <= 32 for a in attempts)
    assert all(a.sampling.temperature == 0 for a in attempts)
    with pytest.raises(ValueError, match="not texts"):
        quantize(tiny, out_dir=tmp_path / "texts", calibration=calibration_texts(2), calibrate_on="generations")
    assert not (tmp_path / "texts").exists()


def test_two_calibrations_are_told_apart_in_a_comparison():
    problems = [Problem(text=f"{i}+1?", reference_answer=str(i + 1), source="toy", source_id=f"P{i}") for i in range(3)]

    def side(calibration: str) -> list[Attempt]:
        q = Quantization(method="gptq", bits=4, group_size=128, extra={"calibration": calibration})
        return [Attempt(problem=p, steps=("A: 1",), correct=True, model="tiny", quantization=q) for p in problems]

    different = compare(side("gsm8k"), side("generations:math500"))
    assert (different.fp_label, different.quant_label) == \
        ("tiny [gptq 4-bit] (calib gsm8k)", "tiny [gptq 4-bit] (calib generations:math500)")
    same = compare(side("gsm8k"), side("gsm8k"))
    assert same.fp_label == same.quant_label == "tiny [gptq 4-bit]"
    assert compare(side("a"), side("b"), quant_label="mine").quant_label == "mine"


@pytest.mark.parametrize("args, words", [
    (["--method", "nvfp4", "--bits", "8"], "4 bits"),
    (["--method", "none"], "kv_cache"),
    (["--method", "gptq", "--rotation", "quip", "--tool", "gptqmodel"], "llm-compressor"),
    (["--method", "awq", "--bits", "3", "--tool", "gptqmodel"], "4-bit"),
    (["--kv-cache", "int2"], "--kv-cache"),
    (["--rotation", "hadamard"], "--rotation"),
    (["--calibrate-on", "guesses"], "--calibrate-on"),
])
def test_bad_grid_settings_are_one_line_usage_errors_before_any_work(args, words, tiny, tmp_path):
    app = typer.Typer()
    commands.register(app)
    result = CliRunner().invoke(app, ["quantize", str(tiny), "--out", str(tmp_path / "q"), *args])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "q").exists()


def test_quantize_command_takes_the_grids_options(tiny, tmp_path):
    app = typer.Typer()
    commands.register(app)
    out = tmp_path / "kv"
    result = CliRunner().invoke(app, ["quantize", str(tiny), "--out", str(out), "--method", "fp8", "--kv-cache", "fp8",
                                      "--simulate", "--calibration", "gsm8k", "--num-samples", "2",
                                      "--max-seq-length", "64"])
    assert result.exit_code == 0, result.output
    record = read_quantization(out)
    assert (record.method, record.kv_cache_dtype, record.extra["simulate"]) == ("fp8", "fp8", True)
    assert "KV cache fp8" in result.output and "simulate True" in result.output
