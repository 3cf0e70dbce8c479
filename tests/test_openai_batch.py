"""The ``openai-batch`` executor against :mod:`tests.support.openai_batch_standin`, a protocol-level stand-in
for the OpenAI Batch API (no local server implements it): submit, a rerun that collects instead of
resubmitting, expired and failed lines requeued into a second batch, the crash windows, and the key
kept out of every file, message and line of output."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest

from quantmedic.judge.backend import Deferred, Endpoint
from quantmedic.judge.batch_backend import BatchBackend
from quantmedic.judge.batch_files import REQUEST_LINE_SCHEMA, RESULT_LINE_SCHEMA, custom_id_for
from quantmedic.judge.batch_store import BatchStore
from quantmedic.judge.openai_batch import STATE_NAME, BatchAPIError, BatchState, OpenAIBatchAPI
from quantmedic.judge.schema import judge_output_schema
from quantmedic.taxonomy.local_server import reserve_port
from quantmedic.taxonomy.model import default_taxonomy

from .support.openai_batch_standin import OpenAIBatchStandin

KEY = "qm-test-key-0123456789abcdef"
"""Not shaped like an ``sk-`` key: only the literal redaction of the configured key can hide it."""
PARAMS = {"temperature": 0.0, "max_tokens": 200, "seed": 0}
SCHEMA = judge_output_schema(default_taxonomy())
PROBLEMS = ["What is 3 + 4?", "What is 5 * 2?", "What is 10 - 6?", "What is 9 / 3?"]


def messages(problem: str) -> list[dict]:
    return [{"role": "system", "content": "You check math solutions."},
            {"role": "user", "content": f"Problem: {problem}\nStep 0: the answer is 7.\nWhich step is wrong?"}]


@pytest.fixture
def standin():
    with OpenAIBatchStandin(KEY, polls=3, echo_key=True) as server:
        yield server


def backend_for(standin: OpenAIBatchStandin, store: BatchStore) -> BatchBackend:
    return BatchBackend(Endpoint(base_url=standin.base_url, model="gpt-4o-mini", api_key=KEY,
                                 response_format="json_schema"), store)


def ask_all(backend: BatchBackend, problems=PROBLEMS) -> dict:
    """Each problem's completion, or the exception its request raised (Deferred while in a batch)."""
    async def one(problem):
        try:
            return await backend.complete(messages(problem), SCHEMA, PARAMS)
        except Exception as error:  # noqa: BLE001 - the test looks at which
            return error
    return {problem: asyncio.run(one(problem)) for problem in problems}


def id_of(backend: BatchBackend, problem: str) -> str:
    return custom_id_for(backend.body(messages(problem), SCHEMA, PARAMS))


def executor(standin: OpenAIBatchStandin, **fields) -> OpenAIBatchAPI:
    return OpenAIBatchAPI(base_url=standin.base_url, api_key=KEY, poll_seconds=0.01, **fields)


def drive(api: OpenAIBatchAPI, folder: Path, said: list[str], rounds: int = 10) -> int:
    """Reruns (a fresh store each time) until no batch is in flight; how many it took."""
    for number in range(1, rounds + 1):
        with BatchStore(folder) as store:
            if api.advance(store, said.append):
                return number
    raise AssertionError(f"still in flight after {rounds} rounds: {said}")


def lines(path: Path) -> list[dict]:
    return [json.loads(text) for text in path.read_text().splitlines() if text.strip()]


def assert_files_follow_the_format(folder: Path) -> None:
    for path in folder.glob("*.requests.jsonl"):
        for line in lines(path):
            jsonschema.validate(line, REQUEST_LINE_SCHEMA)
    for path in [*folder.glob("*.output.jsonl"), *folder.glob("*.errors.jsonl")]:
        for line in lines(path):
            jsonschema.validate(line, RESULT_LINE_SCHEMA)


def assert_no_key_anywhere(root: Path, *texts: str) -> None:
    leaked = [str(p) for p in root.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert not leaked, f"the key is in {leaked}"
    assert not [t for t in texts if KEY in t]


def test_submit_then_a_rerun_collects_without_sending_again(tmp_path, standin, capsys):
    folder, said = tmp_path / "batch", []
    with BatchStore(folder) as store:
        backend = backend_for(standin, store)
        assert all(isinstance(r, Deferred) for r in ask_all(backend).values())
        assert store.queued == len(PROBLEMS)
        assert executor(standin).advance(store, said.append) is False
    assert any(line.startswith("submitted batch batch_") and f"{len(PROBLEMS)} requests" in line for line in said)
    state = json.loads((folder / STATE_NAME).read_text())
    (entry,) = state["batches"]
    assert entry["batch_id"] in standin.batches and entry["input_file_id"] in standin.files
    assert entry["submitted_at"] and entry["requests"] == len(PROBLEMS)

    assert drive(executor(standin), folder, said) == 3  # a fresh executor and store each time: polls, no resend
    assert standin.calls("POST", "/v1/files") == 1 and standin.calls("POST", "/v1/batches") == 1
    assert standin.calls("GET", f"/v1/batches/{entry['batch_id']}") == 3
    assert {s["authorization"] for s in standin.seen} == {f"Bearer {KEY}"}
    assert json.loads((folder / STATE_NAME).read_text())["batches"] == []
    with BatchStore(folder) as store:
        answers = ask_all(backend_for(standin, store))
    for completion in answers.values():
        jsonschema.validate(json.loads(completion.content), SCHEMA)
    uploaded = standin.lines_of(entry["input_file_id"])
    assert [line["custom_id"] for line in lines(folder / "openai-0001.requests.jsonl")] == \
        [line["custom_id"] for line in uploaded]
    assert_files_follow_the_format(folder)
    assert_no_key_anywhere(tmp_path, *said, *capsys.readouterr())


@pytest.mark.parametrize("expired_lines", ["error", "missing"])
def test_expired_and_failed_lines_go_in_a_second_batch(tmp_path, standin, capsys, expired_lines):
    folder, said = tmp_path / "batch", []
    standin.polls, standin.expired_lines = 1, expired_lines
    with BatchStore(folder) as store:
        backend = backend_for(standin, store)
        expired, failed = id_of(backend, PROBLEMS[0]), id_of(backend, PROBLEMS[1])
        standin.expire, standin.fail = {expired}, {failed}
        ask_all(backend)
        executor(standin).advance(store, said.append)
    assert drive(executor(standin), folder, said) == 1
    assert any(" expired: 2/4 done, 2 failed; 2 answered, 2 failed" in line for line in said), said
    with BatchStore(folder) as store:
        first = ask_all(backend_for(standin, store))
        assert [type(first[p]) is Deferred for p in PROBLEMS] == [True, True, False, False]
        assert store.queued == 2
        assert executor(standin).advance(store, said.append) is False  # the second batch
    second = sorted(standin.batches)[-1]
    assert {line["custom_id"] for line in standin.lines_of(standin.batches[second]["input_file_id"])} == \
        {expired, failed}
    assert drive(executor(standin), folder, said) == 1
    with BatchStore(folder) as store:
        answers = ask_all(backend_for(standin, store))
    assert all(not isinstance(a, Exception) for a in answers.values()), answers
    assert standin.calls("POST", "/v1/batches") == 2
    assert_files_follow_the_format(folder)
    assert "[redacted]" in (folder / "openai-0001.errors.jsonl").read_text()  # the stand-in echoed the key
    assert_no_key_anywhere(tmp_path, *said, *capsys.readouterr())


def test_wait_polls_until_every_batch_has_ended(tmp_path, standin):
    folder, said = tmp_path / "batch", []
    with BatchStore(folder) as store:
        backend = backend_for(standin, store)
        ask_all(backend)
        assert executor(standin, wait=True).advance(store, said.append) is True
        assert store.in_flight() == 0 and not json.loads((folder / STATE_NAME).read_text())["batches"]
        answers = ask_all(backend)
    assert all(not isinstance(a, Exception) for a in answers.values()), answers
    assert sum("in_progress" in line for line in said) == 2 and standin.calls("POST", "/v1/batches") == 1


def test_a_run_killed_after_the_upload_creates_the_batch_from_that_file(tmp_path, standin):
    folder, said = tmp_path / "batch", []
    standin.http_faults = [("POST /v1/batches", 500)]
    with BatchStore(folder) as store:
        ask_all(backend_for(standin, store))
        with pytest.raises(BatchAPIError, match="cannot create the batch .*HTTP 500") as raised:
            executor(standin, max_retries=0).advance(store, said.append)
    assert KEY not in str(raised.value) and "[redacted]" in str(raised.value)
    (entry,) = json.loads((folder / STATE_NAME).read_text())["batches"]
    assert entry["input_file_id"] and entry["batch_id"] is None
    drive(executor(standin), folder, said)
    assert standin.calls("POST", "/v1/files") == 1 and standin.calls("POST", "/v1/batches") == 2  # 1 refused
    assert len(standin.batches) == 1


def test_a_run_killed_right_after_creating_finds_that_batch(tmp_path, standin, monkeypatch):
    folder, said = tmp_path / "batch", []
    update = BatchState.update

    def killed_after_create(self, entry, **fields):
        if "batch_id" in fields:
            raise KeyboardInterrupt  # the batch exists on the server; its id never reached the state file
        update(self, entry, **fields)

    monkeypatch.setattr(BatchState, "update", killed_after_create)
    with BatchStore(folder) as store:
        ask_all(backend_for(standin, store))
        with pytest.raises(KeyboardInterrupt):
            executor(standin).advance(store, said.append)
    monkeypatch.setattr(BatchState, "update", update)
    assert drive(executor(standin), folder, said) == 4  # one rerun finds the batch, three poll it
    assert standin.calls("POST", "/v1/batches") == 1 and standin.calls("GET", "/v1/batches") == 1
    with BatchStore(folder) as store:
        assert all(not isinstance(a, Exception) for a in ask_all(backend_for(standin, store)).values())


def test_a_batch_that_fails_validation_is_said_and_its_requests_are_sent_again(tmp_path, standin):
    folder, said = tmp_path / "batch", []
    standin.polls, standin.fail_batches = 1, 1
    with BatchStore(folder) as store:
        ask_all(backend_for(standin, store))
        executor(standin).advance(store, said.append)
    drive(executor(standin), folder, said)
    assert any("failed: invalid_request: injected validation failure (key [redacted]) (line 1)" in s for s in said)
    assert_files_follow_the_format(folder)
    with BatchStore(folder) as store:
        assert all(isinstance(a, Deferred) for a in ask_all(backend_for(standin, store)).values())
    assert drive(executor(standin), folder, said) == 2  # submitted again, then collected
    with BatchStore(folder) as store:
        assert all(not isinstance(a, Exception) for a in ask_all(backend_for(standin, store)).values())
    assert_no_key_anywhere(tmp_path, *said)


def test_a_wrong_key_or_no_server_is_a_clear_error_without_the_key(tmp_path, standin):
    wrong = "qm-wrong-key-9876543210"
    with BatchStore(tmp_path / "batch") as store:
        ask_all(backend_for(standin, store))
        with pytest.raises(BatchAPIError, match="cannot upload the request file .*HTTP 401") as raised:
            OpenAIBatchAPI(base_url=standin.base_url, api_key=wrong, max_retries=0).advance(store, print)
        assert wrong not in str(raised.value)  # the stand-in echoed it
        nowhere = f"http://127.0.0.1:{reserve_port()}/v1"
        with pytest.raises(BatchAPIError, match="APIConnectionError"):
            OpenAIBatchAPI(base_url=nowhere, api_key=KEY, max_retries=0).advance(store, print)
    assert "api_key" not in repr(OpenAIBatchAPI(base_url="u", api_key=KEY)) and KEY not in repr(
        OpenAIBatchAPI(base_url="u", api_key=KEY))
