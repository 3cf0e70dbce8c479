"""The standard ``json_schema`` structured-output path against a real vLLM server (CPU build)."""

import asyncio
import json

import jsonschema
import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.backend import ChatBackend
from quantmedic.judge.runner import JudgeConfig, JudgeRun, JudgeSpec
from quantmedic.judge.schema import judge_output_schema
from quantmedic.taxonomy.model import default_taxonomy

pytestmark = pytest.mark.slow


def test_vllm_enforces_the_judge_schema_through_json_schema(vllm_endpoint, cache, processbench):
    backend = ChatBackend(vllm_endpoint, timeout=300)
    items = [a for a in load_attempts(processbench) if a.correct is False][:4]
    config = JudgeConfig((JudgeSpec(vllm_endpoint, max_tokens=600),), default_taxonomy(), max_invalid_retries=0)
    run = JudgeRun(config, cache, {vllm_endpoint.cache_identity: backend}, concurrency=4)

    async def go():
        try:
            return await run.run(items)
        finally:
            await backend.close()

    verdicts = asyncio.run(go())
    assert backend.mode == "json_schema"  # vLLM accepted the standard response format: no fallback
    assert len(verdicts) == 4 and run.stats.requests_sent == 4
    schema = judge_output_schema(default_taxonomy())
    complete = [v.judges[0] for v in verdicts if not (v.reason or "").startswith("invalid: truncated")]
    assert complete, [v.reason for v in verdicts]
    for answer in complete:
        # guided decoding guarantees the schema (enums, required keys, no extras), whatever the model's skill;
        # only an answer cut at max_tokens can fail it, and that one is unscored as truncated
        jsonschema.validate(json.loads(answer.raw_response), schema)
        if answer.status == "unscored":
            assert answer.reason.split(":")[1].strip() in ("step_out_of_range", "inconsistent", "subtype_mismatch")
