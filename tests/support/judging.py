"""Judging attempts through quantmedic's real judge runner, for tests that need real verdicts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from quantmedic.judge.backend import ChatBackend, Endpoint
from quantmedic.judge.cache import ResponseCache
from quantmedic.judge.runner import JudgeConfig, JudgeRun, JudgeSpec
from quantmedic.taxonomy.model import default_taxonomy
from quantmedic.taxonomy.records import Attempt, Verdict


def judge_attempts(base_url: str, model: str, attempts: Sequence[Attempt], cache_path: Path) -> list[Verdict]:
    """Verdicts on ``attempts`` from one judge ``model`` at ``base_url``, with the default taxonomy."""
    endpoint = Endpoint(base_url, model)
    backend = ChatBackend(endpoint)

    async def go() -> list[Verdict]:
        with ResponseCache(cache_path) as cache:
            run = JudgeRun(JudgeConfig((JudgeSpec(endpoint),), default_taxonomy()), cache,
                           {endpoint.cache_identity: backend})
            try:
                return await run.run(attempts)
            finally:
                await backend.close()

    return asyncio.run(go())
