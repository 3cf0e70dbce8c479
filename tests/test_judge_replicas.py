"""One judge model served by several replicas (``--base-url A --base-url B --model M``), and the
default transport: the ``quantmedic judge`` command against two real fault servers on 127.0.0.1,
one of them killed half way, and the settings that pair URLs with models."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from contextlib import ExitStack

import pytest
from pydantic import ValidationError

from quantmedic.judge.backend import AiohttpTransport, ChatBackend, Endpoint
from quantmedic.judge.cache import ResponseCache
from quantmedic.judge.retry import RetryPolicy
from quantmedic.judge.runner import JudgeConfig, JudgeRun, JudgeSpec
from quantmedic.judge.settings import JudgeSettings, endpoints_of
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.local_server import reserve_port
from quantmedic.taxonomy.model import default_taxonomy
from quantmedic.taxonomy.records import Attempt, Problem, Verdict

from .support.servers import fault_server
from .test_cli_judge import cli

A, B = "http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"


def judge(*urls: str, out, cache, limit: int = 40, extra=()) -> subprocess.CompletedProcess:
    args = [a for url in urls for a in ("--base-url", url)]
    return cli("judge", "gsm8k-solutions", *args, "-m", "fault", "--limit", limit, "--concurrency", "8",
               "--out", out, "--cache", cache, "--max-retries", "3", "--max-delay", "1", *extra)


def all_ok(out, n: int) -> list[Verdict]:
    verdicts = read_records(out, Verdict)
    assert len(verdicts) == n and len({v.id for v in verdicts}) == n
    assert all(v.status == "ok" and v.judge_model == "fault" and len(v.judges) == 1 for v in verdicts)
    return verdicts


# --- settings: how --base-url and --model pair up ----------------------------------------------------------

def test_one_model_and_several_urls_is_one_judge_on_replicas():
    (endpoint,) = endpoints_of(JudgeSettings(base_url=[A, B], models=["m"]))
    assert endpoint.base_urls == (A, B) and endpoint.label == "m"
    (reordered,) = endpoints_of(JudgeSettings(base_url=[B + "/", A], models=["m"]))
    assert endpoint.cache_identity == reordered.cache_identity == f"replicas|{A}|{B}|m"
    assert Endpoint(A, "m").cache_identity == f"{A}|m"  # one URL: the identity it always had


def test_as_many_urls_as_models_keep_one_url_per_model():
    one, two = endpoints_of(JudgeSettings(base_url=[A, B], models=["m", "n"]))
    assert (one.base_urls, one.model, two.base_urls, two.model) == ((A,), "m", (B,), "n")
    assert [e.base_urls for e in endpoints_of(JudgeSettings(base_url=[A], models=["m", "n"]))] == [(A,), (A,)]


@pytest.mark.parametrize("urls, models, says", [
    ([A, B, "http://127.0.0.1:8003/v1"], ["m", "n"], "several for one --model"),
    ([A, A + "/"], ["m"], "the same --base-url twice"),
])
def test_other_counts_are_refused_naming_base_url(urls, models, says):
    with pytest.raises(ValidationError, match=says) as raised:
        JudgeSettings(base_url=urls, models=models)
    assert "base_url" in str(raised.value)


def test_the_default_transport_is_aiohttp_and_reads_the_proxy_once(monkeypatch):
    assert JudgeSettings().transport == "aiohttp"
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    remote = AiohttpTransport(Endpoint("https://api.example.com/v1", "m"), 5)
    assert remote.proxy == "http://proxy.example:3128" and "Proxy-Authorization" in remote.proxy_headers
    assert AiohttpTransport(Endpoint("https://localhost/v1", "m"), 5).proxy is None


def test_requests_go_through_the_proxy_the_environment_names(faults, tmp_path, monkeypatch):
    """The fault server stands in for an HTTP proxy: it is sent the absolute URL and answers it."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{faults.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    endpoint = Endpoint("http://judge.invalid/v1", "fault")
    backend = ChatBackend(endpoint, timeout=5.0)
    items = [Attempt(problem=Problem(text=f"What is {i} + 1?"), steps=(f"{i} + 1 = {i + 3}",), correct=False)
             for i in range(3)]

    async def go():
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            run = JudgeRun(JudgeConfig((JudgeSpec(endpoint),), default_taxonomy()), cache,
                           {endpoint.cache_identity: backend})
            try:
                return await run.run(items)
            finally:
                await backend.close()

    assert all(v.status == "ok" for v in asyncio.run(go()))
    assert len(faults.requests()) == 3


# --- the command, against two real servers --------------------------------------------------------------

def test_two_replicas_share_the_load_and_one_cache(tmp_path):
    out, cache = tmp_path / "v.jsonl", tmp_path / "c.sqlite"
    with fault_server("--latency", "0.05") as one, fault_server("--latency", "0.05") as two:
        result = judge(one.base_url, two.base_url, out=out, cache=cache)
        assert result.returncode == 0, result.stderr
        all_ok(out, 40)
        first, second = len(one.requests()), len(two.requests())
        assert first + second == 40 and min(first, second) >= 10, (first, second)
        one.script([])
        two.script([])
        again = judge(two.base_url, one.base_url, out=tmp_path / "again.jsonl", cache=cache)  # the other order
        assert again.returncode == 0, again.stderr
        assert one.requests() == [] and two.requests() == []
        assert "0 / 40" in again.stderr  # requests sent / from cache
        all_ok(tmp_path / "again.jsonl", 40)


def test_a_replica_killed_half_way_leaves_the_other_to_finish(tmp_path):
    out, cache = tmp_path / "v.jsonl", tmp_path / "c.sqlite"
    with fault_server("--latency", "0.2") as alive, ExitStack() as doomed:
        dying = doomed.enter_context(fault_server("--latency", "0.2"))
        args = [sys.executable, "-m", "quantmedic.pipelines.cli", "judge", "gsm8k-solutions", "--base-url",
                alive.base_url, "--base-url", dying.base_url, "-m", "fault", "--limit", "60", "--concurrency", "6",
                "--max-retries", "2", "--out", str(out), "--cache", str(cache)]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(dying.requests()) < 8 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        doomed.close()  # the second replica is killed, with requests in flight
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        all_ok(out, 60)
        assert len(alive.requests()) >= 40


def test_an_unreachable_replica_is_left_out_and_only_all_unreachable_stops_the_run(faults, tmp_path):
    closed, out = f"http://127.0.0.1:{reserve_port()}/v1", tmp_path / "v.jsonl"
    result = judge(closed, faults.base_url, out=out, cache=tmp_path / "c.sqlite", limit=12)
    assert result.returncode == 0, result.stderr
    all_ok(out, 12)
    other = f"http://127.0.0.1:{reserve_port()}/v1"
    start = time.monotonic()
    result = judge(closed, other, out=tmp_path / "none.jsonl", cache=tmp_path / "c2.sqlite", limit=3)
    assert result.returncode == 1 and time.monotonic() - start < 15, result.stderr
    line = [l for l in result.stderr.splitlines() if "cannot connect" in l][0]
    assert closed in line and other in line and "connection refused" in line
    assert not (tmp_path / "none.jsonl").exists()


def test_a_replica_that_answers_5xx_is_retried_on_the_other(tmp_path):
    policy = RetryPolicy(max_retries=1, base_delay=0.01)
    with fault_server() as bad, fault_server() as good, ResponseCache(tmp_path / "c.sqlite") as cache:
        bad.script(["503"] * 20)
        endpoint = Endpoint(bad.base_url, "fault", replicas=(good.base_url,))
        backend = ChatBackend(endpoint, timeout=5.0, policy=policy)
        items = [Attempt(problem=Problem(text=f"What is {i} + 2?"), steps=(f"{i} + 2 = {i + 5}",), correct=False)
                 for i in range(8)]

        async def go():
            run = JudgeRun(JudgeConfig((JudgeSpec(endpoint),), default_taxonomy()), cache,
                           {endpoint.cache_identity: backend}, concurrency=2)
            try:
                return await run.run(items)
            finally:
                await backend.close()

        assert all(v.status == "ok" for v in asyncio.run(go()))
        assert all(r["fault"] == "503" for r in bad.requests()) and len(good.requests()) == 8
