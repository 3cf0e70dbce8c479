"""Judging throughput against one OpenAI-compatible server with a fixed latency and a fixed number
of request slots: quantmedic's ``JudgeRun`` (schema validation and SQLite persistence on, a fresh
cache so nothing is a cache hit) with its default transport, beside a bare aiohttp loop sending the
same requests, all measured in the same run against the same server; on request also quantmedic with
``--transport sdk``, a bare ``AsyncOpenAI`` loop (httpx) and the SDK's ``client.post`` alone.

The last line compares the two that matter, side by side: the bare aiohttp loop's items/s, the
default transport's, their ratio (the median of the ratios of interleaved runs) and the default
transport's client CPU per item.

The server (``tests/support/fault_server.py``) runs in a separate process, so the client CPU time
(``time.process_time()`` of this process) is the client's alone. The ceiling is
``slots / latency`` items per second; each variant's items/s is reported as a share of it.

Run (from the repository root, with quantmedic importable)::

    python benchmarks/judge_throughput.py [--items 2000] [--concurrency 64] [--latency 0.2] \\
        [--slots 64] [--repeat 3] [--variants aiohttp,quantmedic,quantmedic_sdk] [--json results.json]

This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from quantmedic.taxonomy.local_server import LocalServer, reserve_port, start_server

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "support" / "fault_server.py"
DATA = ROOT / "pipelines" / "data" / "gsm8k" / "model_solutions.jsonl"
MODEL = "fault"


def start_fault_server(latency: float, slots: int, log: Path) -> LocalServer:
    """The fault server on a free port, ready to answer (stopped on exit from ``with``)."""
    port = reserve_port()
    server = start_server([sys.executable, str(SERVER), "--port", str(port), "--latency", str(latency),
                           "--slots", str(slots)], log, name="the fault server", port=port)
    try:
        server.wait_until_ready(f"http://127.0.0.1:{port}/v1/models", 30, interval=0.1)
    except BaseException:
        server.stop()
        raise
    return server


def load_items(n: int, offset: int = 0):
    """``n`` distinct failed attempts from the GSM8K model solutions, cycled when there are fewer.

    A copy gets a distinct sample index (so a distinct id) and a marker after the problem text (so
    a distinct prompt, hence a distinct cache key: no copy can be a cache hit).
    """
    from quantmedic.judge.adapters import load_attempts
    from quantmedic.taxonomy.records import Attempt, Problem, Sampling

    failed = [a for a in load_attempts(DATA) if a.correct is False]
    items = []
    for i in range(offset, offset + n):
        base = failed[i % len(failed)]
        copy = i // len(failed)
        if copy == 0:
            items.append(base)
            continue
        problem = Problem(text=f"{base.problem.text}\n(copy {copy})", reference_answer=base.problem.reference_answer,
                          reference_solution=base.problem.reference_solution, source=base.problem.source,
                          source_id=f"{base.problem.source_id}-copy{copy}")
        items.append(Attempt(problem=problem, steps=base.steps, final_answer=base.final_answer,
                             correct=base.correct, model=base.model, source=base.source,
                             sampling=Sampling(sample_index=copy)))
    return items


def request_fields(attempts):
    """What the bare loops send: the same messages, response_format and params as quantmedic."""
    from quantmedic.judge.backend import Endpoint, response_format_for
    from quantmedic.judge.prompt import build_messages
    from quantmedic.judge.runner import JudgeSpec
    from quantmedic.judge.schema import judge_output_schema
    from quantmedic.taxonomy import default_taxonomy

    taxonomy = default_taxonomy()
    schema = judge_output_schema(taxonomy)
    fmt = response_format_for("json_schema", schema)
    params = JudgeSpec(Endpoint("", MODEL)).params(0)
    return [dict(model=MODEL, messages=build_messages(taxonomy, schema, a), response_format=fmt, **params)
            for a in attempts]


async def run_quantmedic(base_url: str, attempts, concurrency: int, transport: str | None = None) -> dict:
    from quantmedic.judge.backend import DEFAULT_TRANSPORT, ChatBackend, Endpoint
    from quantmedic.judge.cache import ResponseCache
    from quantmedic.judge.runner import JudgeConfig, JudgeRun, JudgeSpec
    from quantmedic.taxonomy import default_taxonomy

    endpoint = Endpoint(base_url, MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(Path(tmp) / "cache.sqlite")
        backend = ChatBackend(endpoint, transport=transport or DEFAULT_TRANSPORT)
        run = JudgeRun(JudgeConfig((JudgeSpec(endpoint),), default_taxonomy()), cache,
                       {endpoint.cache_identity: backend}, concurrency=concurrency)
        try:
            verdicts = await run.run(attempts)
        finally:
            await backend.close()
        stored = len(cache)
        cache.close()
    ok = sum(v.status == "ok" for v in verdicts)
    stats = run.stats
    return {"ok": ok, "requests_sent": stats.requests_sent, "cache_hits": stats.cache_hits, "stored": stored}


async def run_openai(base_url: str, requests: list[dict], concurrency: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
    slots = asyncio.Semaphore(concurrency)

    async def one(fields: dict) -> bool:
        async with slots:
            response = await client.chat.completions.create(**fields)
        return bool(response.choices[0].message.content)

    try:
        results = await asyncio.gather(*(one(r) for r in requests))
    finally:
        await client.close()
    return {"ok": sum(results)}


async def run_openai_post(base_url: str, requests: list[dict], concurrency: int) -> dict:
    """The floor of the SDK path quantmedic takes: ``client.post`` over the aiohttp transport, the
    body read as JSON, nothing else (no prompt building, validation or cache)."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0,
                                http_client=openai.DefaultAioHttpClient())
    slots = asyncio.Semaphore(concurrency)

    async def one(fields: dict) -> bool:
        async with slots:
            body = await client.post("/chat/completions", body=fields, cast_to=bytes,
                                     options={"security": {"bearer_auth": True}})
        return bool(json.loads(body)["choices"][0]["message"]["content"])

    try:
        results = await asyncio.gather(*(one(r) for r in requests))
    finally:
        await client.close()
    return {"ok": sum(results)}


async def run_aiohttp(base_url: str, requests: list[dict], concurrency: int) -> dict:
    import aiohttp

    slots = asyncio.Semaphore(concurrency)
    url = f"{base_url}/chat/completions"
    headers = {"Authorization": "Bearer not-needed"}

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one(fields: dict) -> bool:
            async with slots:
                async with session.post(url, json=fields, headers=headers) as response:
                    response.raise_for_status()
                    body = await response.json()
            return bool(body["choices"][0]["message"]["content"])

        results = await asyncio.gather(*(one(r) for r in requests))
    return {"ok": sum(results)}


VARIANTS = ("aiohttp", "quantmedic", "quantmedic_sdk")
"""The bare aiohttp loop, quantmedic with its default transport, quantmedic with ``--transport sdk``."""
EXTRA_VARIANTS = ("quantmedic_aiohttp", "openai_httpx", "openai_post")  # measured only when named in --variants


def measure(variant: str, base_url: str, attempts, requests, concurrency: int) -> dict:
    gc.collect()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if variant == "quantmedic":
        extra = asyncio.run(run_quantmedic(base_url, attempts, concurrency))
    elif variant.startswith("quantmedic_"):
        extra = asyncio.run(run_quantmedic(base_url, attempts, concurrency, transport=variant.split("_", 1)[1]))
    elif variant == "openai_httpx":
        extra = asyncio.run(run_openai(base_url, requests, concurrency))
    elif variant == "openai_post":
        extra = asyncio.run(run_openai_post(base_url, requests, concurrency))
    else:
        extra = asyncio.run(run_aiohttp(base_url, requests, concurrency))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"wall_s": wall, "cpu_s": cpu, "items_per_s": len(attempts) / wall,
            "cpu_ms_per_item": 1000 * cpu / len(attempts), **extra}


def default_vs_bare(runs: dict[str, list[dict]]) -> dict | None:
    """quantmedic's default transport beside the bare aiohttp loop: medians of their items/s, the median
    of the per-repeat ratios (each pair measured back to back) and the default's CPU per item."""
    from quantmedic.judge.backend import DEFAULT_TRANSPORT

    if not runs.get("quantmedic") or not runs.get("aiohttp"):
        return None
    ours, bare = runs["quantmedic"], runs["aiohttp"]
    return {"transport": DEFAULT_TRANSPORT,
            "bare_items_per_s": statistics.median(r["items_per_s"] for r in bare),
            "default_items_per_s": statistics.median(r["items_per_s"] for r in ours),
            "ratio": statistics.median(q["items_per_s"] / b["items_per_s"] for q, b in zip(ours, bare)),
            "cpu_ms_per_item": statistics.median(r["cpu_ms_per_item"] for r in ours)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="server-side seconds per request")
    parser.add_argument("--slots", type=int, default=64, help="requests the server serves at once")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; the median is reported")
    parser.add_argument("--warmup", type=int, default=128, help="items per variant run once before timing")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, from {VARIANTS + EXTRA_VARIANTS}")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS + EXTRA_VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")

    ceiling = min(args.slots, args.concurrency) / args.latency
    attempts = load_items(args.items)
    requests = request_fields(attempts)
    warm_attempts = load_items(args.warmup, offset=args.items) if args.warmup else []
    warm_requests = request_fields(warm_attempts)
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with (tempfile.TemporaryDirectory(prefix="judge-throughput-") as tmp,
          start_fault_server(args.latency, args.slots, Path(tmp) / "fault-server.log") as server):
        base_url = f"http://127.0.0.1:{server.port}/v1"
        for variant in variants:
            if args.warmup:
                measure(variant, base_url, warm_attempts, warm_requests, args.concurrency)
        for _ in range(args.repeat):
            for variant in variants:  # interleaved, so drift hits every variant alike
                runs[variant].append(measure(variant, base_url, attempts, requests, args.concurrency))

    results = {}
    for variant, measured in runs.items():
        rate = statistics.median(r["items_per_s"] for r in measured)
        cpu = statistics.median(r["cpu_ms_per_item"] for r in measured)
        results[variant] = {"items_per_s": rate, "ceiling_share": rate / ceiling, "cpu_ms_per_item": cpu,
                            "runs": measured}
    report = {
        "default_vs_bare": default_vs_bare(runs), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "items": args.items, "concurrency": args.concurrency, "latency_s": args.latency, "slots": args.slots,
        "repeat": args.repeat, "ceiling_items_per_s": ceiling, "results": results,
    }
    print(f"{args.items} items, concurrency {args.concurrency}, server latency {args.latency * 1000:g} ms, "
          f"{args.slots} slots: ceiling {ceiling:.0f} items/s; {os.cpu_count()} CPUs; median of {args.repeat}")
    print(f"{'variant':<20}{'items/s':>9}{'ceiling':>9}{'CPU ms/item':>13}{'ok':>7}")
    for variant, r in results.items():
        print(f"{variant:<20}{r['items_per_s']:>9.1f}{r['ceiling_share']:>8.1%}{r['cpu_ms_per_item']:>13.2f}"
              f"{r['runs'][-1]['ok']:>7}")
    if (side := report["default_vs_bare"]) is not None:
        print(f"bare aiohttp {side['bare_items_per_s']:.1f} items/s | default transport ({side['transport']}) "
              f"{side['default_items_per_s']:.1f} items/s | ratio {side['ratio']:.1%} | client CPU "
              f"{side['cpu_ms_per_item']:.2f} ms/item (target: ratio >= 95%, CPU <= 1 ms/item)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
