"""The GPU check (scripts/gpu-check.sh) on this CPU machine: one line per declared path, GPU-only paths skipped
with a why that names the GPU, the CPU-possible reasoning parser run for real, and the refusals it would
apply on an H200. The GPU paths themselves run only on a GPU machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .support.tiny_model import tiny_model

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-check.sh"
VLLM_PYTHON = Path(os.environ.get("QUANTMEDIC_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
CPU_PATHS = {"coverage.formats", "reasoning.parser"}
LINE = re.compile(r"^(\S+)\s+(ran|failed|skipped)\s+(.*)$")

sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402


def check(*args: str, vllm_python: Path | str = sys.executable, timeout: float = 120,
          **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, QM_PYTHON=sys.executable, QM_VLLM_PYTHON=str(vllm_python),
                       QM_MODEL=str(tiny_model()), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", **env)
    environment.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=environment, cwd=REPO)


def declared() -> list[str]:
    listed = check("--list")
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.split()


def results(stdout: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in stdout.splitlines():
        if line.startswith("#") or line.startswith("SUMMARY"):
            continue
        match = LINE.match(line)
        assert match, f"not a path line: {line!r}"
        assert match[1] not in found, f"two lines for {match[1]}"
        found[match[1]] = (match[2], match[3])
    return found


def test_every_path_prints_one_line_and_the_gpu_paths_say_they_need_the_gpu():
    paths = declared()
    methods = {v.method for v in gpu_check.VARIANTS}
    from quantmedic.pipelines.models.formats import FORMATS

    assert methods == set(FORMATS)
    assert {"train.dpo-qlora", "reasoning.parser", "reasoning.server", "generate.vllm.fp16"} <= set(paths)
    assert {f"quantize.{v.name}" for v in gpu_check.VARIANTS} <= set(paths)
    # the test venv has no vLLM: the vLLM paths are skipped too, fast (no model is loaded anywhere)
    done = check()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = results(done.stdout)
    assert sorted(lines) == sorted(paths)  # phase 1's lines come as its chains finish
    for name, (status, why) in lines.items():
        if name == "coverage.formats":
            assert status == "ran" and "8 methods" in why
        elif name == "reasoning.parser":
            assert status == "skipped" and "has no vllm" in why
        elif name.startswith("cpu."):
            assert status == "skipped" and "--cpu" in why
        else:
            assert status == "skipped" and "GPU" in why, (name, status, why)
    summary = done.stdout.strip().splitlines()[-1]
    assert re.match(rf"SUMMARY  ran 1  failed 0  skipped {len(paths) - 1}  of {len(paths)} paths in [\d.]+ s$", summary)
    assert "torch.cuda.is_available() is False" in lines["quantize.gptq-w4"][1]
    assert lines["generate.vllm.gptq-w4"][1].startswith("needs quantize.gptq-w4, which skipped (needs a CUDA GPU")


def test_a_missing_interpreter_is_one_line_and_exit_1(tmp_path):
    done = check(vllm_python=tmp_path / "no-such-python")
    assert done.returncode == 1
    assert done.stdout.strip().count("\n") == 0 and done.stdout.startswith("missing: ")


@pytest.mark.skipif(not VLLM_PYTHON.is_file(), reason="no vLLM venv (scripts/setup-test-env.sh makes .venv-vllm)")
def test_the_reasoning_parser_runs_on_cpu_and_the_selection_skips_the_rest(tmp_path):
    done = check("--only", "^reasoning\\.parser$", vllm_python=VLLM_PYTHON, QM_GPU_CHECK_LOGS=str(tmp_path / "logs"))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = results(done.stdout)
    status, note = lines["reasoning.parser"]
    assert status == "ran" and "deepseek_r1 split" in note and "split_thinking" in note, note
    assert all(s == "skipped" and w == "not selected (--only/--skip)" for n, (s, w) in lines.items()
               if n != "reasoning.parser")
    assert (tmp_path / "logs" / "reasoning.parser.log").is_file()


def test_on_an_h200_the_formats_without_kernels_are_skipped_with_the_refusal_line():
    class Ctx:
        vllm = gpu_check.Interpreter("QM_VLLM_PYTHON", Path("python"), torch="2", cuda=True, capability=(9, 0))
        checkpoints: dict = {}

    refused = {v.name: gpu_check.vllm_refusal(Ctx, v) for v in gpu_check.VARIANTS}
    assert {n for n, why in refused.items() if why} == {"nvfp4", "mxfp4", "w4a4-spinquant", "kv-int4"}
    assert refused["nvfp4"].startswith("W4A4 nvfp4 needs a Blackwell GPU for real kernels")
    assert {v.name for v in gpu_check.VARIANTS if v.simulated} == {"nvfp4", "mxfp4", "w4a4-spinquant", "kv-int4"}
    Ctx.vllm.capability = (10, 0)
    assert gpu_check.vllm_refusal(Ctx, next(v for v in gpu_check.VARIANTS if v.name == "nvfp4")) is None


def test_the_why_of_a_failure_is_the_error_line_of_its_log():
    panel = ("Usage: quantmedic quantize\n╭─ Error ─────╮\n│ Invalid value: group 128 does │\n"
             "│ not divide 576             │\n╰─────────────╯\n")
    assert gpu_check.why_from_log(panel) == "Invalid value: group 128 does not divide 576"
    assert gpu_check.why_from_log("Traceback\n  File x\nRuntimeError: boom\n") == "RuntimeError: boom"
    assert gpu_check.why_from_log("loading\nerror: the model folder is empty\nbye\n") == "error: the model folder is empty"


def test_the_command_lines_the_paths_give_are_accepted_by_the_cli(tmp_path):
    """Each variant's quantize options (with and without --simulate) and the simulated generate's pass the CLI's
    parsing and settings checks: they stop at the (missing) model, before anything is loaded."""
    from typer.testing import CliRunner

    from quantmedic.pipelines.cli import app

    runner, missing = CliRunner(), str(tmp_path / "no-model")
    commands = [["quantize", missing, "--out", str(tmp_path / v.name),
                 *gpu_check.quantize_args(v, samples=16, seq=256, simulate=simulate)]
                for v in gpu_check.VARIANTS for simulate in (False, True)]
    commands.append(["generate", missing, "--benchmark", gpu_check.BENCHMARK, "--limit", "8", "--max-tokens", "128",
                     "--backend", "transformers", "--simulate", "--no-grade", "--out", str(tmp_path / "a.jsonl")])
    for command in commands:
        result = runner.invoke(app, command)
        why = gpu_check.why_from_log((result.output or "") + str(result.exception or ""))
        assert result.exit_code == 1 and "no such model folder" in why, (command, result.exit_code, why)
