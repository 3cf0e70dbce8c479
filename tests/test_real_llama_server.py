"""The embedded default judge for real: llama.cpp's OpenAI-compatible server with SmolLM2-135M.

SmolLM2-135M is a weak judge, so these tests check the plumbing (structured output is enforced,
answers are validated, nothing is dropped, the server starts and stops), not the diagnoses.
"""

import asyncio
import dataclasses
import json
import re
import socket
import subprocess

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.backend import ChatBackend
from quantmedic.judge.runner import JudgeConfig, JudgeRun, JudgeSpec
from quantmedic.judge.schema import judge_output_schema
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.model import default_taxonomy
from quantmedic.taxonomy.records import Verdict

from .test_cli_judge import cli

pytestmark = pytest.mark.slow


def llama_servers() -> set[str]:
    return set(subprocess.run(["pgrep", "-f", "llama_cpp.server"], capture_output=True, text=True).stdout.split())


def test_json_schema_falls_back_to_json_object_and_output_follows_the_schema(llama_endpoint, cache, processbench):
    endpoint = dataclasses.replace(llama_endpoint, response_format="auto")  # let it discover the fallback
    backend = ChatBackend(endpoint, timeout=300)
    failed = [a for a in load_attempts(processbench) if a.correct is False][:2]
    config = JudgeConfig((JudgeSpec(endpoint, max_tokens=300),), default_taxonomy(), max_invalid_retries=0)
    run = JudgeRun(config, cache, {endpoint.cache_identity: backend}, concurrency=1)

    async def go():
        try:
            return await run.run(failed)
        finally:
            await backend.close()

    verdicts = asyncio.run(go())
    assert backend.mode == "json_object"  # llama.cpp refused json_schema; the fallback was taken
    assert len(verdicts) == 2 and run.stats.requests_sent == 2
    schema = judge_output_schema(default_taxonomy())
    for verdict in verdicts:
        (answer,) = verdict.judges
        data = json.loads(answer.raw_response, strict=False)  # grammar-constrained: always JSON
        assert set(data) == set(schema["required"])
        assert data["category"] in schema["properties"]["category"]["enum"]
        assert data["subtype"] in schema["properties"]["subtype"]["enum"]
        assert isinstance(data["first_wrong_step"], int) and isinstance(data["explanation"], str)
        assert (verdict.status == "ok") == (answer.status == "ok")
        if verdict.status == "unscored":
            assert verdict.reason.startswith("invalid: ") and verdict.category is None
        assert answer.usage.prompt_tokens > 500 and answer.usage.completion_tokens > 0


def test_cli_embedded_default_starts_judges_and_stops(tmp_path):
    before = llama_servers()
    out = tmp_path / "verdicts.jsonl"
    result = cli("judge", "gsm8k-solutions", "--limit", "1", "--invalid-retries", "0", "--max-tokens", "300",
                 "--out", out, "--cache", tmp_path / "c.sqlite")
    assert result.returncode == 0, result.stderr
    assert "starting the embedded judge" in result.stderr and "Judging summary" in result.stderr
    (verdict,) = read_records(out, Verdict)
    assert verdict.judge_model == "local" and verdict.judges[0].raw_response
    assert verdict.status == "ok" or verdict.reason.startswith("invalid: ")
    assert not llama_servers() - before  # the embedded server was stopped (others may come and go)
    url = re.search(r"embedded judge serving at (http://127\.0\.0\.1:(\d+)/v1)", result.stderr.replace("\n", ""))
    assert url, result.stderr
    with pytest.raises(OSError):  # nothing listens on its port any more
        socket.create_connection(("127.0.0.1", int(url.group(2))), timeout=2).close()
