"""The ``vllm-batch`` executor: judge requests queued in a :class:`BatchStore`, run by the real
``vllm run-batch`` (the CPU build in ``.venv-vllm``, slow), answered from the store afterwards; a
batch whose run fails stays in flight and the next run retries it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from quantmedic.judge.backend import Deferred, Endpoint, RequestRejected
from quantmedic.judge.batch_backend import BatchBackend
from quantmedic.judge.batch_files import REQUEST_LINE_SCHEMA, RESULT_LINE_SCHEMA
from quantmedic.judge.batch_store import BatchStore
from quantmedic.judge.schema import judge_output_schema
from quantmedic.judge.vllm_batch import BatchFailed, VllmRunBatch, check_requests, next_batch_name
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.model import default_taxonomy

from .conftest import REPO, unavailable

ENDPOINT = Endpoint(base_url="http://vllm-batch.invalid/v1", model="local", identity="vllm-batch|local",
                    response_format="json_schema")
FAILING = (sys.executable, "-c", "import sys; print('engine core failed to start'); sys.exit(1)")
PARAMS = {"temperature": 0.0, "max_tokens": 160, "seed": 0}
STEPS = [("Tom has 3 apples and buys 4 more.", ["Step 0: 3 + 4 = 7.", "Step 1: So Tom has 7 apples."]),
         ("A pen costs $2. How much do 5 pens cost?", ["Step 0: 5 * 2 = 12.", "Step 1: They cost $12."]),
         ("What is 10 - 6?", ["Step 0: 10 - 6 = 4.", "Step 1: The answer is 4."])]

STANDIN = '''"""A stand-in for ``vllm run-batch`` (not vLLM): answers each request line of ``-i`` in ``-o`` with a
canned completion, and refuses a request asking to be refused the way vLLM does (a bare string ``error``)."""
import json, sys
args = sys.argv[1:]
source, target = args[args.index("-i") + 1], args[args.index("-o") + 1]
with open(source) as lines, open(target, "w") as out:
    for text in lines:
        request = json.loads(text)
        line = {"id": "standin", "custom_id": request["custom_id"], "error": None}
        if "refuse" in request["body"]["messages"][-1]["content"]:
            line.update(response={"status_code": 400, "request_id": "r"}, error="refused by the stand-in")
        else:
            body = {"choices": [{"message": {"role": "assistant", "content": '{"answer": "ok"}'},
                                 "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
            line.update(response={"status_code": 200, "request_id": "r", "body": body})
        out.write(json.dumps(line) + "\\n")
'''
TOO_LONG = [{"role": "user", "content": "seven " * 3000}]
TINY_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def judge_messages(problem: str, steps: list[str]) -> list[dict]:
    return [{"role": "system", "content": "You check math solutions. Answer with one short JSON object."},
            {"role": "user", "content": f"Problem: {problem}\n" + "\n".join(steps)
             + "\nWhich step is the first wrong one (-1 if none)? Keep the explanation under ten words."}]


def ask(backend: BatchBackend, messages: list[dict], schema: dict):
    return asyncio.run(backend.complete(messages, schema, PARAMS))


def lines(path: Path) -> list[dict]:
    return [json.loads(text) for text in path.read_text().splitlines() if text.strip()]


def short_judge_schema() -> dict:
    """The judge's schema with a bounded explanation: SmolLM2-135M otherwise repeats itself until
    ``max_tokens`` (structured output keeps it to the schema, not to the point)."""
    schema = judge_output_schema(default_taxonomy())
    explanation = {**schema["properties"]["explanation"], "maxLength": 80}
    return {**schema, "properties": {**schema["properties"], "explanation": explanation}}


def cpu_executor(vllm: Path, model: str) -> VllmRunBatch:
    """``vllm run-batch`` set up for 2 CPU cores: no torch.compile, the model in the engine's own
    process, a 1 GiB KV cache, and no free whitespace in structured output (SmolLM2-135M loops on it)."""
    from .support.vllm_server import SERVER_ENV

    return VllmRunBatch(model=model, served_model_name="local", vllm=str(vllm), env={
        **SERVER_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}, extra_args=(
        "--dtype", "bfloat16", "--max-model-len", "2048", "--enforce-eager", "--distributed-executor-backend", "uni",
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}'))


def vllm_or_skip() -> tuple[Path, str]:
    """The ``vllm`` script of ``.venv-vllm`` and the HF copy of SmolLM2-135M-Instruct it loads."""
    from quantmedic.judge.embedded import EmbeddedJudgeUnavailable, find_gguf

    from .support.vllm_server import ensure_hf_model

    python = Path(os.environ.get("QUANTMEDIC_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
    if not (python.parent / "vllm").exists():
        unavailable(f"no vLLM environment at {python.parent} (scripts/setup-test-env.sh makes it)")
    try:
        model = ensure_hf_model(str(python), str(find_gguf()), str(REPO / ".cache" / "smollm2-hf"))
    except EmbeddedJudgeUnavailable as error:
        unavailable(str(error))
    return python.parent / "vllm", model


@pytest.mark.slow
def test_vllm_run_batch_answers_the_deferred_requests_with_schema_valid_json(tmp_path):
    vllm, model = vllm_or_skip()
    schema = short_judge_schema()
    with BatchStore(tmp_path / "batch") as store:
        backend = BatchBackend(ENDPOINT, store)
        for problem, steps in STEPS:
            with pytest.raises(Deferred):
                ask(backend, judge_messages(problem, steps), schema)
        with pytest.raises(Deferred):  # longer than --max-model-len: vLLM refuses it in its result line
            ask(backend, TOO_LONG, schema)
        assert store.queued == 4
        with pytest.raises(BatchFailed, match="(?s)exited with code 1 on vllm-0001.*engine core failed"):
            VllmRunBatch(model=model, served_model_name="local", vllm=FAILING).advance(store, print)
        assert store.in_flight("vllm-0001") == 4 and store.queued == 0

        said: list[str] = []
        executor = cpu_executor(vllm, model)
        start = time.monotonic()
        assert executor.advance(store, said.append) is True
        print(f"vllm run-batch took {time.monotonic() - start:.0f} s; {said}")
        assert store.in_flight() == 0 and said[-1].startswith("vllm run-batch: 4 requests, 3 answered, 1 failed")

        for problem, steps in STEPS:
            completion = ask(backend, judge_messages(problem, steps), schema)
            assert completion.finish_reason == "stop", completion
            jsonschema.validate(json.loads(completion.content), schema)
        with pytest.raises(RequestRejected, match="2048"):
            ask(backend, TOO_LONG, schema)
    requests, results = lines(tmp_path / "batch" / "vllm-0001.requests.jsonl"), lines(
        tmp_path / "batch" / "vllm-0001.results.jsonl")
    assert len(requests) == len(results) == 4 and not list((tmp_path / "batch").glob("*.partial"))
    for line in requests:
        jsonschema.validate(line, REQUEST_LINE_SCHEMA)
        assert line["body"]["response_format"]["type"] == "json_schema" and line["body"]["model"] == "local"
    for line in results:
        jsonschema.validate(line, RESULT_LINE_SCHEMA)
    assert {line["custom_id"] for line in results} == {line["custom_id"] for line in requests}
    assert "--served-model-name local" in (tmp_path / "batch" / "vllm-0001.log").read_text()


def test_a_failed_run_keeps_the_batch_in_flight_and_the_next_run_retries_it(tmp_path):
    (standin := tmp_path / "standin_run_batch.py").write_text(STANDIN)
    with BatchStore(tmp_path / "batch") as store:
        backend = BatchBackend(ENDPOINT, store)
        for text in ("what is 2 + 2?", "please refuse this"):
            with pytest.raises(Deferred):
                ask(backend, [{"role": "user", "content": text}], TINY_SCHEMA)
        with pytest.raises(BatchFailed) as failed:
            VllmRunBatch(model="m", served_model_name="local", vllm=FAILING).advance(store, print)
        message = str(failed.value)
        assert message.startswith("vllm run-batch exited with code 1 on vllm-0001; its requests stay in flight")
        assert "engine core failed to start" in message and "vllm-0001.log" in message
        assert store.in_flight("vllm-0001") == 2 and not (tmp_path / "batch" / "vllm-0001.results.jsonl").exists()

        said: list[str] = []
        working = VllmRunBatch(model="m", served_model_name="local", vllm=(sys.executable, str(standin)))
        assert working.advance(store, said.append) is True
        assert said == ["vllm run-batch: running vllm-0001 again (an earlier run stopped before it finished)",
                        said[1]] and said[1].startswith("vllm run-batch: 2 requests, 1 answered, 1 failed in ")
        assert next_batch_name(store.folder) == "vllm-0002"  # the retry reused the batch: no new request file
        assert ask(backend, [{"role": "user", "content": "what is 2 + 2?"}], TINY_SCHEMA).content == '{"answer": "ok"}'
        with pytest.raises(RequestRejected, match="refused by the stand-in"):
            ask(backend, [{"role": "user", "content": "please refuse this"}], TINY_SCHEMA)
        assert working.advance(store, said.append) is True and len(said) == 2  # nothing queued: nothing run
    for line in lines(tmp_path / "batch" / "vllm-0001.results.jsonl"):
        jsonschema.validate(line, RESULT_LINE_SCHEMA)


def test_a_results_file_left_by_a_killed_run_is_ingested_without_running_vllm(tmp_path):
    (standin := tmp_path / "standin_run_batch.py").write_text(STANDIN)
    with BatchStore(tmp_path / "batch") as store:
        backend = BatchBackend(ENDPOINT, store)
        with pytest.raises(Deferred):
            ask(backend, [{"role": "user", "content": "hello"}], TINY_SCHEMA)
        requests = store.take_queued("vllm-0001")  # killed after vLLM finished, before the ingest
        VllmRunBatch(model="m", vllm=(sys.executable, str(standin))).run(
            requests, store.folder / "vllm-0001.results.jsonl", "vllm-0001")
        said: list[str] = []
        assert VllmRunBatch(model="m", vllm=FAILING).advance(store, said.append) is True
        assert said == ["vllm run-batch: collected vllm-0001: 1 answered, 0 failed"]
        assert ask(backend, [{"role": "user", "content": "hello"}], TINY_SCHEMA).content == '{"answer": "ok"}'


def test_requests_are_checked_against_the_format_and_the_served_model(tmp_path):
    good = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "local", "messages": [{"role": "user", "content": "hi"}]}}
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n")
    assert check_requests(path, "local") == 2
    with pytest.raises(InputError, match=r"r.jsonl:1: field \"body.model\": asks for model 'local'; vLLM serves 'x'"):
        check_requests(path, "x")
    path.write_text(json.dumps({**good, "url": "/v1/embeddings"}) + "\n")
    with pytest.raises(InputError, match="not a batch request line"):
        check_requests(path)


def test_the_command_line(tmp_path):
    executor = VllmRunBatch(model="/m", served_model_name="local", vllm=("py", "-m", "vllm.x"),
                            extra_args=("--max-model-len", "2048"))
    assert executor.command(Path("in.jsonl"), Path("out.partial")) == [
        "py", "-m", "vllm.x", "-i", "in.jsonl", "-o", "out.partial", "--model", "/m", "--served-model-name", "local",
        "--max-model-len", "2048"]
    with pytest.raises(BatchFailed, match="no vllm command 'no-such-vllm'"):
        VllmRunBatch(model="/m", vllm="no-such-vllm").launcher()
