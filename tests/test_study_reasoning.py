"""``quantmedic run`` with a reasoning model: attempts read from files instead of generated.

The CPU example (``examples/cpu-reasoning-traces.yaml``) runs for real from the shipped R1-Distill
traces with the embedded llama.cpp judge, then ``quantmedic report``, then again (nothing new runs);
the GPU example (``examples/r1-distill-qwen-1.5b-gpu.yaml``) is validated with ``--check``.
"""

import importlib.util
import json
from pathlib import Path

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.embedded import EmbeddedJudgeUnavailable, find_gguf
from quantmedic.pipelines.data import shipped_path
from quantmedic.pipelines.study.config import StudyConfig
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.records import Attempt, Verdict

from .conftest import unavailable
from .test_cli_judge import cli
from .test_study import stages_that_ran

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CPU = EXAMPLES / "cpu-reasoning-traces.yaml"
GPU = EXAMPLES / "r1-distill-qwen-1.5b-gpu.yaml"
Q = "kvquant-kv3"
NOT_TREATED = ("train", "treated", "rejudge", "evaluate")


def flat(text: str) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(text.split())


def test_the_gpu_example_validates_without_downloading_anything(tmp_path):
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # a download would fail here
    result = cli("run", GPU, "--check", "--out", tmp_path / "study", cwd=tmp_path, env=offline)
    assert result.returncode == 0, result.stderr
    assert "valid (4 quantizations, benchmark aime120" in flat(result.stderr)
    assert list(tmp_path.iterdir()) == []  # nothing created or fetched
    config = StudyConfig.model_validate(__import__("yaml").safe_load(GPU.read_text()))
    assert [q.label for q in config.quantizations] == ["gptq-w4-g128", "gptq-w3-g128", "awq-w4-g128", "w8a8-w8"]
    assert config.model.path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" and config.judge.base_url
    assert config.judge.scope == "thinking"
    g = config.seeded("generation")  # the reasoning preset, seeded by the study's seed
    assert (g.backend, g.temperature, g.top_p, g.max_tokens, g.n, g.prompt) == ("vllm", 0.6, 0.95, 32768, 3,
                                                                                "reasoning")
    assert [g.sample_seed_base(i) for i in range(g.n)] == [42, 43, 44] and config.taxonomy == "reasoning"
    preset = cli("run", GPU, "--check", "--set", "generation.preset=fast", "--out", tmp_path / "s", env=offline)
    assert preset.returncode == 2 and "generation.preset=fast" in preset.stderr
    taxonomy = cli("run", GPU, "--check", "--set", "taxonomy=reasoningg", "--out", tmp_path / "s", env=offline)
    assert taxonomy.returncode == 1 and 'field "taxonomy"' in taxonomy.stderr


def test_attempts_files_are_checked_and_missing_sides_are_refused_in_one_line(tmp_path):
    missing = cli("run", CPU, "--check", "--set", "quantizations.0.attempts=no-such.jsonl", "--out", tmp_path / "s")
    assert missing.returncode == 1 and 'field "quantizations.0.attempts"' in missing.stderr
    assert "no such file of attempts" in flat(missing.stderr) and "Traceback" not in missing.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"problem": {"text": "1+1?"}, "steps": []}\n')
    bad = cli("run", CPU, "--check", "--set", f"model.attempts={broken}", "--out", tmp_path / "s")
    assert bad.returncode == 1 and 'field "model.attempts"' in bad.stderr and f"{broken}:1" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    flipped = cli("run", CPU, "--check", "--set", "judge.failures=flipped", "--out", tmp_path / "s")
    assert flipped.returncode == 2 and "set judge.failures: all" in flat(flipped.stderr)
    nothing = tmp_path / "nothing.yaml"
    nothing.write_text("name: n\nmodel: {label: m}\nquantizations: [{method: gptq}]\njudge: {failures: all}\n")
    refused = cli("run", nothing, "--check", "--out", tmp_path / "s")
    assert refused.returncode == 1 and f"{nothing}:3:" in refused.stderr and "nothing to quantize" in refused.stderr
    scope = cli("run", CPU, "--check", "--set", "judge.scope=steps", "--out", tmp_path / "s")
    assert scope.returncode == 2 and "judge.scope=steps" in scope.stderr and "'thinking'" in scope.stderr
    tokenizer = cli("run", CPU, "--check", "--set", f"judge.tokenizer={tmp_path / 'no.json'}", "--out", tmp_path / "s")
    assert tokenizer.returncode == 1 and 'field "judge.tokenizer"' in tokenizer.stderr
    fp_named = cli("run", CPU, "--check", "--set", "quantizations.0.name=fp", "--out", tmp_path / "s")
    assert fp_named.returncode == 2 and "full-precision side" in flat(fp_named.stderr)
    assert not (tmp_path / "s").exists()


def test_full_precision_attempts_from_a_file_pair_with_the_traces_and_stop_before_judging(tmp_path):
    """A full-precision side read from a file: compare runs (paired by problem id), and --until stops there."""
    traces = load_attempts(shipped_path("r1-kv3-math500-traces"))
    fp = tmp_path / "fp.jsonl"  # a stand-in full-precision side: the traces with every right/wrong label flipped
    write_records(fp, [a.model_copy(update={"correct": not a.correct, "id": ""}) for a in traces[:30]])
    out = tmp_path / "study"
    result = cli("run", CPU, "--out", out, "--set", f"model.attempts={fp}", "--set", "judge.failures=flipped",
                 "--until", "compare")
    assert result.returncode == 0, result.stderr[-2000:]
    state = json.loads((out / "state.json").read_text())
    assert state["quantize:fp"]["status"] == "skipped" and state["generate:fp"]["generated"] is False
    comparison = json.loads((out / state[f"compare:{Q}"]["folder"] / "comparison.json").read_text())
    right_to_wrong = sum(a.correct is False for a in traces[:30])  # wrong in the traces, so right in fp.jsonl
    assert comparison["pairs"]["right_to_wrong"] == right_to_wrong and comparison["pairs"]["usable"] == 30
    quantized = read_records(out / state[f"generate:{Q}"]["folder"] / "attempts.jsonl", Attempt)
    assert {a.quantization.kv_cache_dtype for a in quantized} == {"int3"} and len(quantized) == 100
    assert f"judge:{Q}" not in state


@pytest.mark.slow
def test_the_cpu_reasoning_example_runs_from_the_shipped_traces_reports_and_resumes(tmp_path):
    try:
        find_gguf()
        if importlib.util.find_spec("llama_cpp") is None:
            raise EmbeddedJudgeUnavailable("llama-cpp-python is not installed")
    except EmbeddedJudgeUnavailable as error:
        unavailable(str(error))
    out = tmp_path / "study"
    first = cli("run", CPU, "--out", out, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    skipped = {name: entry["reason"] for name, entry in state.items() if entry["status"] == "skipped"}
    assert set(skipped) >= {"quantize:fp", "generate:fp", f"quantize:{Q}", f"compare:{Q}",
                            *(f"{kind}:{Q}" for kind in NOT_TREATED)}
    assert all("no checkpoint to treat" in skipped[f"{kind}:{Q}"] for kind in NOT_TREATED)
    assert "no full-precision side" in skipped[f"compare:{Q}"]
    text = flat(first.stderr)
    assert "100 attempts read from r1-kv3-math500-traces (not generated; 61 correct)" in text
    assert ", ".join(f"{kind}:{Q}" for kind in NOT_TREATED) + ": skipped: no checkpoint to treat" in text

    attempts = read_records(out / state[f"generate:{Q}"]["folder"] / "attempts.jsonl", Attempt)
    assert len(attempts) == 100 and sum(a.correct is False for a in attempts) == 39
    assert all(a.thinking is not None for a in attempts)
    assert {a.quantization.kv_cache_dtype for a in attempts} == {"int3"}
    verdicts = read_records(out / state[f"judge:{Q}"]["folder"] / "verdicts.jsonl", Verdict)
    assert len(verdicts) == 2 and all(v.attempt.correct is False and v.attempt.thinking for v in verdicts)
    assert {v.scope for v in verdicts} == {"thinking"}  # judged over the thinking, in windows
    assert all(v.taxonomy.startswith("quantmedic-reasoning@") for v in verdicts)  # the reasoning taxonomy
    medicine = state[f"medicine:{Q}"]
    assert medicine["status"] in ("done", "skipped")  # the weak judge may score none: an empty medicine, skipped
    if medicine["status"] == "skipped":
        assert "the medicine is empty" in medicine["reason"] and "nothing to treat with" in medicine["reason"]

    report = cli("report", out)
    assert report.returncode == 0, report.stderr
    markdown = (out / "report" / "report.md").read_text()
    assert Q in markdown and (out / "report" / "index.html").is_file()
    assert "## Stages not run" in markdown and all(f"| {name} | " in markdown for name in skipped)
    right = sum(a.correct is True for a in attempts)
    assert f"| {Q} | quantized (not compared) | {100 * right / len(attempts):.1f}% |" in markdown  # no compare
    assert f"| {Q} | all | {len(attempts)} | {100 * right / len(attempts):.1f}% | {len(attempts)} |" in markdown

    again = cli("run", CPU, "--out", out, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert stages_that_ran(again.stderr) == [] and "0 stages ran" in flat(again.stderr)
    assert f"judge:{Q}: unchanged, skipped" in flat(again.stderr)
    assert json.loads((out / "state.json").read_text()) == state
    later = cli("run", CPU, "--out", out, "--from", "judge", cwd=tmp_path, timeout=300)  # compare was skipped: fine
    assert later.returncode == 0 and stages_that_ran(later.stderr) == [], later.stderr[-2000:]
    assert f"generate:{Q}: unchanged" not in later.stderr and json.loads((out / "state.json").read_text()) == state
