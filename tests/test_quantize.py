"""Quantizing the tiny model for real (llm-compressor GPTQ and W8A8, GPTQModel GPTQ and AWQ) on CPU (the rest of
the low-bit grid: test_quantize_grid.py),
loading the checkpoints with transformers, and the settings travelling into the attempts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.cli.models import commands
from quantmedic.pipelines.models.generation import generate
from quantmedic.pipelines.models.loading import RECORD_FILE, infer_quantization, load_for_generation, read_quantization
from quantmedic.pipelines.models.quantize import choose_tool, quantize
from quantmedic.pipelines.models.quantize_config import check_settings
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import Attempt, Quantization

from .support.tiny_model import calibration_texts, tiny_model

SETTINGS = {  # name: (method, bits, tool)
    "llmc-gptq": ("gptq", 4, "llmcompressor"),
    "llmc-w8a8": ("w8a8", 8, "llmcompressor"),
    "gptqmodel-gptq": ("gptq", 4, "gptqmodel"),
    "gptqmodel-awq": ("awq", 4, "gptqmodel"),
}


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_model()


@pytest.fixture(scope="module")
def checkpoints(tiny, tmp_path_factory):
    """name -> (folder, returned record), quantized once per module, in the order of SETTINGS."""
    made = {}
    root = tmp_path_factory.mktemp("quantized")

    def get(name: str):
        if name not in made:
            method, bits, tool = SETTINGS[name]
            out = root / name
            made[name] = (out, quantize(tiny, method=method, bits=bits, group_size=128, calibration=calibration_texts(16),
                                        out_dir=out, tool=tool, num_samples=16, max_seq_length=256))
        return made[name]

    return get


# --- pure parts ---

def test_auto_picks_gptqmodel_for_awq_only_without_an_accelerator():
    assert choose_tool("awq", "auto", accelerator=False) == "gptqmodel"
    assert choose_tool("awq", "auto", accelerator=True) == "llmcompressor"
    assert choose_tool("gptq", "auto", accelerator=False) == "llmcompressor"
    assert choose_tool("gptq", "gptqmodel", accelerator=False) == "gptqmodel"
    assert choose_tool("awq", "llmcompressor", accelerator=False) == "llmcompressor"  # its CPU workaround
    assert choose_tool("awq", "auto", accelerator=False, bits=8) == "llmcompressor"  # GPTQModel's AWQ is 4-bit
    with pytest.raises(ValueError, match="W8A8"):
        choose_tool("w8a8", "gptqmodel", accelerator=True)
    with pytest.raises(ValueError, match="unknown method"):
        choose_tool("nf4", "auto", accelerator=False)


@pytest.mark.parametrize("method, bits, group", [("w8a8", 4, None), ("awq", 5, 128), ("gptq", 5, 128), ("nvfp4", 8, None),
                                                 ("gptq", 4, 0)])
def test_settings_no_tool_supports_are_refused(method, bits, group):
    with pytest.raises(ValueError):
        check_settings(method, bits, group)


def test_records_are_inferred_from_configs_quantized_elsewhere():
    autoawq = infer_quantization({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128,
                                                          "zero_point": True, "version": "gemm"}})
    assert (autoawq.method, autoawq.bits, autoawq.group_size, autoawq.format, autoawq.tool) == \
        ("awq", 4, 128, "awq-gemm", None)
    autogptq = infer_quantization({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 32,
                                                           "desc_act": True, "sym": True}})
    assert (autogptq.method, autogptq.group_size, autogptq.format, autogptq.extra["desc_act"]) == \
        ("gptq", 32, "gptq", True)
    gptqmodel = infer_quantization({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128,
                                                            "meta": {"quantizer": ["gptqmodel:7.6.0"]}}})
    assert gptqmodel.tool == "gptqmodel 7.6.0"
    groups = {"group_0": {"weights": {"num_bits": 8, "group_size": None, "strategy": "channel"},
                          "input_activations": {"num_bits": 8, "strategy": "token", "dynamic": True}}}
    w8a8 = infer_quantization({"quantization_config": {"quant_method": "compressed-tensors", "config_groups": groups,
                                                       "format": "int-quantized"}}, "GPTQModifier:\n  scheme: W8A8")
    assert (w8a8.method, w8a8.bits, w8a8.format, w8a8.extra["algorithm"]) == \
        ("w8a8", 8, "compressed-tensors", "gptq")
    bnb = infer_quantization({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}})
    assert (bnb.method, bnb.bits) == ("bitsandbytes", 4)
    assert infer_quantization({"architectures": ["Qwen2ForCausalLM"]}) is None


def test_a_full_precision_model_has_no_quantization(tiny):
    assert read_quantization(tiny) is None


# --- real quantization ---

def _down_proj(model):  # 512 inputs: four groups of 128, or 512 weights per output channel
    return model.model.layers[0].mlp.down_proj


@pytest.mark.parametrize("name", list(SETTINGS))
def test_quantized_checkpoint_loads_generates_and_carries_its_settings(name, checkpoints, tiny, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out, record = checkpoints(name)
    method, bits, tool = SETTINGS[name]
    assert (record.method, record.bits) == (method, bits)
    assert record.group_size == (None if method == "w8a8" else 128)
    assert record.tool.replace("-", "").startswith(tool)
    assert record.extra["calibration_samples"] == 16 and record.extra["calibration"] == "custom"
    assert read_quantization(out) == record == Quantization.model_validate_json((out / RECORD_FILE).read_text())

    loaded = load_for_generation(out, device="cpu")
    assert loaded.quantization == record and loaded.name == name
    layer = _down_proj(loaded.model)
    if tool == "gptqmodel":  # runs on GPTQModel's quantized kernels, not a dense Linear
        assert type(layer).__module__.startswith("gptqmodel.") and "qweight" in dict(layer.named_buffers())
    else:  # compressed-tensors decompresses on the first forward: then at most 2**bits values per group
        loaded.model(torch.tensor([[1, 2, 3]]))
        dense = _down_proj(AutoModelForCausalLM.from_pretrained(tiny)).weight.detach()
        weight = layer.weight.detach().float()
        assert not weight.equal(dense)
        if method == "gptq":
            assert (weight - dense).abs().max() < 0.5 * dense.abs().max()
            assert len(weight[0, :128].unique()) <= 2 ** bits
        else:  # SmoothQuant moved scale from the layer norm into the columns; int8 per output channel
            assert len(weight[0].unique()) <= 2 ** bits < len(dense[0].unique())

    problems = load_benchmark("gsm8k", limit=2)
    summary = generate(out, problems, out_path=tmp_path / "attempts.jsonl", backend="transformers", max_tokens=24,
                       device="cpu", simulate=method == "w8a8")  # int8 activations have no kernel under transformers
    attempts = read_records(tmp_path / "attempts.jsonl", Attempt)
    assert summary.written == len(attempts) == 2
    for attempt in attempts:  # GPTQModel's kernels are real; compressed-tensors is dequantized: simulated
        q = attempt.quantization
        simulation = {"simulation": "weights dequantized by compressed-tensors" + (
            "; activations int8 per-token dynamic (compressed-tensors, 14 layers)" if method == "w8a8" else "")}
        assert q == record.model_copy(update={"execution": "real kernels"} if tool == "gptqmodel" else {
            "execution": "simulated", "extra": {**record.extra, **simulation}}) and attempt.model == name
        assert attempt.steps and all(s.strip() for s in attempt.steps)
        assert attempt.finish_reason in ("stop", "length") and 0 < attempt.completion_tokens <= 24


def _as_if_from_elsewhere(src: Path, dst: Path, quantization_config: dict) -> Path:
    shutil.copytree(src, dst)
    (dst / RECORD_FILE).unlink()
    (dst / "quantize_config.json").unlink(missing_ok=True)
    config = json.loads((dst / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_autoawq_and_autogptq_style_checkpoints_load_with_an_inferred_record(checkpoints, tmp_path):
    awq_dir, _ = checkpoints("gptqmodel-awq")
    gptq_dir, _ = checkpoints("gptqmodel-gptq")
    autoawq = _as_if_from_elsewhere(awq_dir, tmp_path / "autoawq", {  # AutoAWQ's config.json keys
        "quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": False, "version": "gemm",
        "modules_to_not_convert": None})
    autogptq = _as_if_from_elsewhere(gptq_dir, tmp_path / "autogptq", {  # AutoGPTQ's config.json keys
        "quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True,
        "true_sequential": True, "damp_percent": 0.01, "static_groups": False, "model_file_base_name": "model"})
    for folder, method, fmt in ((autoawq, "awq", "awq-gemm"), (autogptq, "gptq", "gptq")):
        loaded = load_for_generation(folder, device="cpu")
        q = loaded.quantization
        assert (q.method, q.bits, q.group_size, q.format, q.tool, q.extra["inferred"]) == (method, 4, 128, fmt, None, True)
        generate(folder, load_benchmark("gsm8k", limit=1), out_path=tmp_path / f"{method}.jsonl", backend="transformers",
                 max_tokens=8, device="cpu")
        (attempt,) = read_records(tmp_path / f"{method}.jsonl", Attempt)
        assert attempt.quantization == q.model_copy(update={"execution": "real kernels"})  # GPTQModel's kernels


def test_quantize_command_writes_the_checkpoint_and_its_record(tiny, tmp_path):
    app = typer.Typer()
    commands.register(app)
    out = tmp_path / "gptq8"
    result = CliRunner().invoke(app, ["quantize", str(tiny), "--method", "gptq", "--bits", "8", "--group-size", "-1",
                                      "--calibration", "gsm8k", "--num-samples", "8", "--out", str(out),
                                      "--tool", "llmcompressor"])
    assert result.exit_code == 0, result.output
    record = read_quantization(out)
    assert (record.method, record.bits, record.group_size, record.format) == ("gptq", 8, -1, "compressed-tensors")
    assert record.extra["calibration"] == "gsm8k" and record.extra["calibration_samples"] == 8
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "compressed-tensors"

    refused = CliRunner().invoke(app, ["quantize", str(tiny), "--method", "w8a8", "--tool", "gptqmodel",
                                       "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "llmcompressor" in refused.output
    unknown = CliRunner().invoke(app, ["quantize", str(tiny), "--method", "nf4", "--out", str(tmp_path / "y")])
    assert unknown.exit_code == 2
