"""``quantmedic generate --executor vllm-batch|openai-batch``: the generation's chat requests carried as
batches in the OpenAI batch file format, through the judge's batch store and executors, read back as the
online ``openai`` backend reads its answers; ``--vllm-arg`` / ``--vllm-env`` reach ``vllm run-batch``.

The Batch API is :mod:`tests.support.openai_batch_standin` (a protocol-level stand-in); ``vllm-batch`` runs
once for real (the CPU build in ``.venv-vllm``, SmolLM2-135M, slow) and otherwise a stand-in script."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest

from quantmedic.judge.batch_files import REQUEST_LINE_SCHEMA, RESULT_LINE_SCHEMA, custom_id_for
from quantmedic.judge.batch_job import BatchSettings
from quantmedic.judge.batch_store import BatchStore
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.models.batch_engine import BatchRefused
from quantmedic.pipelines.models.engines import Request, chat_body, chat_output
from quantmedic.pipelines.models.generation import generate, pending_requests
from quantmedic.pipelines.models.generation_config import GenerationSettings
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import Attempt

from .support.openai_batch_standin import OpenAIBatchStandin
from .test_cli_judge import cli

KEY = "qm-gen-batch-key-5566778899"
MODEL = "served-model"


class GenerationStandin(OpenAIBatchStandin):
    """The Batch API stand-in answering as a reasoning model: a thinking (``reasoning_content``), a
    solution in steps whose answer is the request's seed mod 10, the finish reason ``length`` when the
    request allows fewer than 100 tokens."""

    def _completion(self, body: dict) -> dict:
        completion = super()._completion(body)
        choice = completion["choices"][0]
        choice["message"].update(content=f"Step 1: Add.\n\nStep 2: So \\boxed{{{body['seed'] % 10}}}",
                                 reasoning_content=f"thinking about {body['messages'][-1]['content'][:20]}")
        choice["finish_reason"] = "length" if body["max_tokens"] < 100 else "stop"
        return completion


@pytest.fixture
def standin():
    with GenerationStandin(KEY, polls=2, echo_key=True) as server:
        yield server


@pytest.fixture(scope="module")
def problems():
    return load_benchmark("gsm8k", limit=3)


def settings_for(standin: OpenAIBatchStandin, **fields) -> GenerationSettings:
    return GenerationSettings(**{"backend": "openai", "base_url": standin.base_url, "served_model": MODEL, "n": 2,
                                 "max_tokens": 64, **fields})


def ids_of(problems, settings: GenerationSettings) -> dict[tuple[str, int], str]:
    """Each sample's custom id, as the online backend's request body digests to."""
    return {(r.problem.id, r.index): custom_id_for(chat_body(MODEL, r, settings.sampling(), None, settings.prompt))
            for r in pending_requests(problems, {}, settings.sampling())}


def run(problems, out: Path, settings: GenerationSettings, **batch):
    return generate(MODEL, problems, out_path=out, settings=settings, api_key=KEY,
                    batch=BatchSettings(executor="openai-batch", poll_seconds=0.01, **batch))


def test_openai_batch_generation_submits_then_reruns_collect_without_sending_again(tmp_path, standin, problems):
    out, settings = tmp_path / "attempts.jsonl", settings_for(standin)
    assert run(problems, out, settings).written == 0  # submitted
    assert run(problems, out, settings).written == 0  # in progress: polled
    summary = run(problems, out, settings)  # ended: collected
    assert (summary.written, summary.completion_tokens) == (6, 6 * 20)
    assert standin.calls("POST", "/v1/files") == 1 and standin.calls("POST", "/v1/batches") == 1
    assert run(problems, out, settings).written == 0 and standin.calls("POST", "/v1/batches") == 1  # all done

    attempts = read_records(out, Attempt)
    assert sorted((a.problem.id, a.sampling.sample_index) for a in attempts) == sorted(ids_of(problems, settings))
    for a in attempts:
        extra = a.sampling.extra
        assert (extra["backend"], extra["executor"], extra["endpoints"]) == ("openai", "openai-batch",
                                                                            [standin.base_url])
        assert a.model == MODEL and a.finish_reason == "length" and a.completion_tokens == 20
        assert a.steps == ("Step 1: Add.", f"Step 2: So \\boxed{{{a.sampling.seed % 10}}}")
        assert a.final_answer == str(a.sampling.seed % 10)
    folder = tmp_path / "attempts.jsonl.batch"  # the default batch folder, beside the attempts
    uploaded = [json.loads(line) for line in (folder / "openai-0001.requests.jsonl").read_text().splitlines()]
    for line in uploaded:
        jsonschema.validate(line, REQUEST_LINE_SCHEMA)
        assert line["body"]["model"] == MODEL and line["body"]["max_tokens"] == 64 and line["body"]["n"] == 1
    assert {line["custom_id"] for line in uploaded} == set(ids_of(problems, settings).values())
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path


def test_an_expired_line_is_requeued_into_a_second_batch(tmp_path, standin, problems):
    out, settings = tmp_path / "a.jsonl", settings_for(standin, prompt="reasoning", max_tokens=512)
    ids = ids_of(problems, settings)
    expired = ids[(problems[1].id, 0)]
    standin.polls, standin.expire = 1, {expired}
    summary = run(problems, out, settings, wait=True, batch_dir=tmp_path / "b")
    assert summary.written == 6
    assert standin.calls("POST", "/v1/batches") == 2
    second = sorted(standin.batches)[-1]
    assert [line["custom_id"] for line in standin.lines_of(standin.batches[second]["input_file_id"])] == [expired]
    with BatchStore(tmp_path / "b") as store:
        assert store.tries(expired) == 1
    attempts = read_records(out, Attempt)
    assert {a.finish_reason for a in attempts} == {"stop"}
    for a in attempts:  # the reasoning prompt: the server's reasoning_content is the thinking
        assert a.thinking is not None and a.thinking.text.startswith("thinking about")
        assert a.sampling.extra["executor"] == "openai-batch" and a.sampling.extra["prompt"] == "reasoning"


class RefusingExecutor:
    """A batch executor that answers each queued request at once, refusing (HTTP 400) those in ``refuse``."""

    name, discount = "test-batch", 1.0

    def __init__(self, refuse: set[str]):
        self.refuse = refuse

    def advance(self, store: BatchStore, say) -> bool:
        requests = store.take_queued("test-0001")
        lines = []
        for text in requests.read_text().splitlines():
            custom_id = json.loads(text)["custom_id"]
            answer = {"choices": [{"message": {"content": "Step 1: \\boxed{3}"}, "finish_reason": "stop"}]}
            response = ({"status_code": 400, "body": {"error": {"message": "prompt too long"}}}
                        if custom_id in self.refuse else {"status_code": 200, "body": answer})
            lines.append(json.dumps({"custom_id": custom_id, "response": response, "error": None}) + "\n")
        (results := store.folder / "test-0001.results.jsonl").write_text("".join(lines))
        store.ingest("test-0001", [results])
        return True


def test_a_refused_sample_is_one_error_after_the_other_attempts_are_written(tmp_path, problems):
    from quantmedic.pipelines.models.batch_engine import BatchEngine
    from quantmedic.pipelines.models.generation import run_generation

    settings = GenerationSettings(n=1, max_tokens=32).sampling()
    refused = {custom_id_for(chat_body(MODEL, r, settings, None, "steps"))
               for r in pending_requests(problems[:1], {}, settings)}
    engine = BatchEngine(RefusingExecutor(refused), tmp_path / "b", MODEL, say=print)
    out = tmp_path / "a.jsonl"
    with pytest.raises(BatchRefused, match=rf"1 samples were refused by test-batch .*{problems[0].id} sample 0: "
                                           "HTTP 400: prompt too long"):
        run_generation(lambda: engine, problems, out, model=MODEL, quantization=None, settings=settings)
    attempts = read_records(out, Attempt)
    assert sorted(a.problem.id for a in attempts) == sorted(p.id for p in problems[1:])
    assert {a.sampling.extra["executor"] for a in attempts} == {"test-batch"}


def test_a_batch_answer_reads_as_the_same_completion_online():
    from openai.types.chat import ChatCompletion

    body = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "usage": {
        "prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}, "choices": [{
            "index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "Step 1: x",
                                                               "reasoning_content": "hm"}}]}
    online = chat_output(ChatCompletion.model_validate(body))
    assert chat_output(body) == online and (online.reasoning, online.completion_tokens) == ("hm", 7)


RUN_BATCH = '''#!{python}
"""A stand-in for `vllm run-batch` (not vLLM): answers each request of -i in -o with the arguments after
--model and the variable QM_PROBE in its content."""
import json, os, sys
args = sys.argv[1:]
source, target = args[args.index("-i") + 1], args[args.index("-o") + 1]
extra = " ".join(args[args.index("--model") + 2:])
with open(source) as lines, open(target, "w") as out:
    for text in lines:
        request = json.loads(text)
        content = f"Step 1: {{os.environ.get('QM_PROBE')}} {{extra}}\\n\\nStep 2: \\\\boxed{{{{7}}}}"
        body = {{"choices": [{{"index": 0, "finish_reason": "stop", "message": {{"role": "assistant",
                 "content": content}}}}], "usage": {{"completion_tokens": 9}}}}
        out.write(json.dumps({{"id": "x", "custom_id": request["custom_id"], "error": None,
                              "response": {{"status_code": 200, "request_id": "r", "body": body}}}}) + "\\n")
'''


def test_vllm_arg_and_vllm_env_reach_run_batch_and_a_rerun_sends_nothing(tmp_path):
    (runner := tmp_path / "bin" / "vllm").parent.mkdir()
    runner.write_text(RUN_BATCH.format(python=sys.executable))
    runner.chmod(0o755)
    (model := tmp_path / "tiny").mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    out, batch = tmp_path / "a.jsonl", tmp_path / "batch"
    args = ("generate", model, "--benchmark", "gsm8k", "--limit", "2", "--out", out, "--no-grade",
            "--executor", "vllm-batch", "--vllm-command", runner, "--batch-dir", batch,
            "--vllm-arg=--enforce-eager", "--vllm-arg=--max-model-len=2048", "--vllm-env", "QM_PROBE=a=b")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert "vllm-batch: vllm run-batch: 2 requests, 2 answered, 0 failed" in first.stderr
    attempts = read_records(out, Attempt)
    assert len(attempts) == 2 and {a.steps[0] for a in attempts} == {
        "Step 1: a=b --enforce-eager --max-model-len=2048"}
    assert {(a.model, a.sampling.extra["executor"], a.final_answer, a.completion_tokens) for a in attempts} == {
        ("tiny", "vllm-batch", "7", 9)}
    assert {json.loads(line)["body"]["model"] for line in (batch / "vllm-0001.requests.jsonl").open()} == {str(model)}
    again = cli(*args)
    assert again.returncode == 0 and "wrote 0 attempts" in again.stderr and "2 of 2 problems" in again.stderr
    assert not (batch / "vllm-0002.requests.jsonl").exists()


@pytest.mark.parametrize("command", [
    ("judge", "processbench-gsm8k", "--executor", "vllm-batch", "--vllm-model", "m", "-m", "local"),
    ("generate", "m", "--benchmark", "gsm8k", "--executor", "vllm-batch"),
])
def test_a_vllm_env_that_is_not_key_value_is_one_line_and_exit_2(tmp_path, command):
    result = cli(*command, "--out", tmp_path / "o.jsonl", "--vllm-env", "BAD")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--vllm-env" in result.stderr and "'BAD' is not KEY=VALUE" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_vllm_run_batch_generates_for_real_and_a_rerun_sends_nothing(tmp_path):
    from .test_vllm_batch import vllm_or_skip

    vllm, model = vllm_or_skip()
    out, batch = tmp_path / "a.jsonl", tmp_path / "batch"
    env = ["HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "VLLM_NO_USAGE_STATS=1", "OMP_NUM_THREADS=1",
           "VLLM_CPU_KVCACHE_SPACE=1", "VLLM_ENABLE_V1_MULTIPROCESSING=0", "TOKENIZERS_PARALLELISM=false"]
    args = ("generate", model, "--benchmark", "gsm8k", "--limit", "3", "--out", out, "--max-tokens", "48",
            "--executor", "vllm-batch", "--vllm-command", vllm, "--batch-dir", batch, "--model-name", "local",
            "--vllm-arg=--dtype=bfloat16", "--vllm-arg=--max-model-len=2048", "--vllm-arg=--enforce-eager",
            "--vllm-arg=--distributed-executor-backend=uni", *(f"--vllm-env={pair}" for pair in env))
    first = cli(*args, timeout=900)
    assert first.returncode == 0, first.stderr
    print(first.stderr)
    attempts = read_records(out, Attempt)
    assert len(attempts) == 3 and {a.model for a in attempts} == {Path(model).name}
    for a in attempts:
        assert a.sampling.extra["executor"] == "vllm-batch" and a.sampling.extra["backend"] == "openai"
        assert a.finish_reason in ("stop", "length") and 0 < a.completion_tokens <= 48 and a.steps
    requests = [json.loads(line) for line in (batch / "vllm-0001.requests.jsonl").open()]
    results = [json.loads(line) for line in (batch / "vllm-0001.results.jsonl").open()]
    assert len(requests) == len(results) == 3 and {r["body"]["model"] for r in requests} == {"local"}
    for line in requests:
        jsonschema.validate(line, REQUEST_LINE_SCHEMA)
    for line in results:
        jsonschema.validate(line, RESULT_LINE_SCHEMA)
    log = (batch / "vllm-0001.log").read_text()
    assert "--served-model-name local" in log and "--max-model-len=2048 --enforce-eager" in log
    again = cli(*args, timeout=300)
    assert again.returncode == 0 and "wrote 0 attempts" in again.stderr, again.stderr
    assert sorted(p.name for p in batch.glob("*.requests.jsonl")) == ["vllm-0001.requests.jsonl"]
