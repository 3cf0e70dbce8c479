"""Judging against the FAULT-INJECTING server (tests/support/fault_server.py): the faults here
(429 with Retry-After, 5xx, hangs, broken or truncated JSON) are ones a real server will not
produce on demand. Everything else about the requests is real HTTP through the openai SDK."""

import asyncio
import json

import pytest

from quantmedic.judge.backend import ChatBackend, Endpoint
from quantmedic.judge.cache import ResponseCache
from quantmedic.judge.retry import RetryPolicy
from quantmedic.judge.runner import JudgeConfig, JudgeRun, JudgeRunAborted, JudgeSpec
from quantmedic.taxonomy.model import default_taxonomy
from quantmedic.taxonomy.records import Attempt, Problem

from .support.servers import fault_server

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=5.0)


def attempts(n: int) -> list[Attempt]:
    return [Attempt(problem=Problem(text=f"What is {i} + 1?"), steps=(f"{i} + 1 = {i + 2}", f"A: {i + 2}"),
                    correct=False) for i in range(n)]


@pytest.fixture(params=["sdk", "aiohttp"])
def transport(request):
    """Every behaviour holds for both transports: the openai SDK and direct aiohttp."""
    return request.param


def judge(server, items, cache, transport, *, samples=1, policy=FAST, timeout=5.0, response_format="auto",
          invalid_retries=2, concurrency=8):
    endpoint = Endpoint(server.base_url, "fault", response_format=response_format)
    backend = ChatBackend(endpoint, timeout=timeout, policy=policy, transport=transport)
    config = JudgeConfig((JudgeSpec(endpoint, samples=samples),), default_taxonomy(),
                         max_invalid_retries=invalid_retries)
    run = JudgeRun(config, cache, {endpoint.cache_identity: backend}, concurrency=concurrency)

    async def go():
        try:
            return await run.run(items)
        finally:
            await backend.close()

    return asyncio.run(go()), run.stats, backend


def test_clean_run_then_rerun_sends_nothing(faults, cache, transport):
    verdicts, stats, backend = judge(faults, attempts(20), cache, transport)
    assert [v.status for v in verdicts] == ["ok"] * 20
    assert {(v.first_wrong_step, v.category, v.subtype) for v in verdicts} == {(1, "execution", "computational_error")}
    assert stats.requests_sent == 20 and backend.mode == "json_schema"
    assert {r["format"] for r in faults.requests()} == {"json_schema"}
    assert stats.usage_sent.prompt_tokens == 2000 and stats.usage_sent.completion_tokens == 400
    faults.script([])
    again, stats, _ = judge(faults, attempts(20), cache, transport)
    assert again == verdicts and stats.requests_sent == 0 and stats.cache_hits == 20
    assert faults.requests() == []


def test_429_honours_retry_after_and_5xx_are_retried(faults, cache, transport):
    faults.script(["429:1", "503", "500"])
    verdicts, stats, _ = judge(faults, attempts(1), cache, transport)
    assert verdicts[0].status == "ok" and stats.transport_retries == 3
    times = [r["time"] for r in faults.requests()]
    assert len(times) == 4
    assert times[1] - times[0] >= 0.95  # waited for Retry-After: 1
    assert times[3] - times[1] < 0.9    # 5xx: short jittered backoff, not the 1 s


def test_retry_after_is_capped(faults, cache, transport):
    faults.script(["429:3600"])
    verdicts, stats, _ = judge(faults, attempts(1), cache, transport, policy=RetryPolicy(max_retries=2, max_delay=0.3))
    assert verdicts[0].status == "ok" and stats.transport_retries == 1


def test_exhausted_retries_are_unscored_and_resent_on_rerun(faults, cache, transport):
    faults.script(["500"] * 4)
    verdicts, stats, _ = judge(faults, attempts(1), cache, transport)
    (verdict,) = verdicts
    assert verdict.status == "unscored" and verdict.reason.startswith("transport: HTTP 500 after 4 tries")
    assert verdict.first_wrong_step is None and verdict.category is None
    faults.script([])
    verdicts, stats, _ = judge(faults, attempts(1), cache, transport)
    assert verdicts[0].status == "ok" and stats.requests_sent == 1


def test_timeouts_are_retried(faults, cache, transport):
    faults.script(["hang"])
    verdicts, stats, _ = judge(faults, attempts(1), cache, transport, timeout=1.0)
    assert verdicts[0].status == "ok" and stats.transport_retries == 1


def test_other_4xx_are_not_retried(faults, cache, transport):
    faults.script(["400"])
    verdicts, stats, _ = judge(faults, attempts(1), cache, transport)
    assert verdicts[0].status == "unscored" and "HTTP 400" in verdicts[0].reason
    assert len(faults.requests()) == 1 and stats.transport_retries == 0


def test_wrong_key_aborts_the_run(faults, cache, transport):
    faults.script(["401"])
    with pytest.raises(JudgeRunAborted, match="401"):
        judge(faults, attempts(1), cache, transport)
    assert len(faults.requests()) == 1


@pytest.mark.parametrize("kind", ["malformed", "truncated", "bad_subtype", "out_of_range"])
def test_invalid_answers_are_re_asked_with_feedback(faults, cache, kind, transport):
    faults.script([kind])
    verdicts, stats, _ = judge(faults, attempts(1), cache, transport)
    (verdict,) = verdicts
    assert verdict.status == "ok" and verdict.judges[0].tries == 2 and stats.invalid_answers == 1
    first, second = faults.requests()
    assert (first["messages"], second["messages"]) == (2, 4)  # + the bad answer and the feedback


def test_persistently_invalid_output_is_unscored_not_dropped(faults, cache, transport):
    faults.script(["truncated"] * 3)
    verdicts, stats, _ = judge(faults, attempts(1), cache, transport, invalid_retries=2)
    assert [v.status for v in verdicts] == ["unscored"] and len(faults.requests()) == 3
    assert verdicts[0].reason.startswith("invalid: truncated") and verdicts[0].judges[0].tries == 3
    assert verdicts[0].raw_response and verdicts[0].confidence is None


def test_json_schema_refusal_falls_back_to_json_object(tmp_path, transport):
    with fault_server("--reject-json-schema") as server:
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            verdicts, stats, backend = judge(server, attempts(3), cache, transport, concurrency=1)
        formats = [r["format"] for r in server.requests()]
    assert [v.status for v in verdicts] == ["ok"] * 3 and backend.mode == "json_object"
    assert formats == ["json_schema", "json_object", "json_object", "json_object"]


def test_k_samples_keep_every_answer_and_the_majority(faults, cache, transport):
    faults.script(["ok", "bad_subtype", "bad_subtype", "ok"])
    verdicts, stats, _ = judge(faults, attempts(1), cache, transport, samples=3, invalid_retries=0, concurrency=1)
    (verdict,) = verdicts
    assert [j.judge for j in verdict.judges] == ["fault#0", "fault#1", "fault#2"]
    assert [j.status for j in verdict.judges] == ["ok", "unscored", "unscored"]
    assert verdict.status == "ok" and verdict.agreement == 1.0 and verdict.subtype == "computational_error"


def test_the_key_is_sent_as_a_bearer_token(faults, cache, transport):
    endpoint = Endpoint(faults.base_url, "fault", api_key="sk-test-abc")
    backend = ChatBackend(endpoint, transport=transport)
    assert "sk-test-abc" not in repr(endpoint)

    async def go():
        try:
            return await backend.complete([{"role": "user", "content": "numbered 0 to 2"}], {}, {"max_tokens": 5})
        finally:
            await backend.close()

    completion = asyncio.run(go())
    assert json.loads(completion.content)["first_wrong_step"] == 1 and completion.prompt_tokens == 100
    (request,) = faults.requests()
    assert request["authorization"] == "Bearer sk-test-abc" and request["seed"] is None
