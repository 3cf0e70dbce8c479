"""Judging through a batch executor (``--executor vllm-batch`` or ``openai-batch``): passes over the input
until every request has its answer.

A pass judges as the online path does, but each backend answers from the run's
:class:`~.batch_store.BatchStore`: an item whose request has no result yet is deferred (no verdict), its
request queued. After the pass the executor runs (or submits, or collects) a batch of what was queued,
and the next pass reads the answers, through the same validation, cache and records as online answers;
an invalid answer's re-ask is one more pass. An executor whose batch is still running (the OpenAI
Batch API's 24-hour window) ends the run: a rerun collects the batch instead of sending it again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.console import Console

from quantmedic.taxonomy.errors import FieldError

from .batch_store import BatchExecutor, BatchStore
from .runner import RunStats
from .verdict_file import Folded

class BatchSettings(BaseModel):
    """How the judge's requests are carried: online (the default), or as batches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    executor: Literal["online", "vllm-batch", "openai-batch"] = Field("online", description=(
        "online (requests as they come), vllm-batch (vLLM's offline runner, `vllm run-batch`, on this machine: "
        "give --vllm-model; the answers are the judge --model's) or openai-batch (the OpenAI Batch API at "
        "--base-url: half the price, a 24-hour window; the batch ids are kept in --batch-dir and a rerun polls "
        "and collects instead of sending again; expired or failed lines go in the next batch). Batches use the "
        "OpenAI batch file format and feed the same validation, cache and verdicts as online answers."))
    batch_dir: Path | None = Field(None, description=(
        "The batch run's state folder (request and result files, batch ids). Default: <--out>.batch beside it."))
    vllm_model: str | None = Field(None, description=(
        "For vllm-batch: the model vLLM loads (a local folder or an HF id); requests name it as --model."))
    vllm_command: str = Field("vllm", description="For vllm-batch: the vllm executable (e.g. .venv-vllm/bin/vllm).")
    wait: bool = Field(False, description=(
        "For openai-batch: poll until the batch is done instead of exiting after submitting it."))
    poll_seconds: float = Field(30.0, gt=0, description="For openai-batch with --wait: seconds between polls.")
    vllm_args: tuple[str, ...] = Field((), description=(
        "For vllm-batch: one more argument of `vllm run-batch`, as is; repeat it, e.g. --vllm-arg=--enforce-eager "
        "--vllm-arg=--max-model-len=2048 (give an argument that starts with - after =)."))
    vllm_env: tuple[str, ...] = Field((), description=(
        "For vllm-batch: KEY=VALUE, an environment variable set for vLLM on top of this one's; repeat it, e.g. "
        "--vllm-env VLLM_CPU_KVCACHE_SPACE=4."))

    @field_validator("vllm_env")
    @classmethod
    def _key_value(cls, pairs: tuple[str, ...]) -> tuple[str, ...]:
        for pair in pairs:
            key, sep, _ = pair.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"{pair!r} is not KEY=VALUE (a variable name, =, its value)")
        return pairs

    @property
    def environment(self) -> dict[str, str]:
        """:attr:`vllm_env` as a mapping (a key given twice: the last one)."""
        return dict(pair.partition("=")[::2] for pair in self.vllm_env)

    def executor_for(self, endpoint) -> BatchExecutor | None:
        """The executor of these settings for the judge at ``endpoint``; None when online."""
        return self.make_executor(endpoint.base_url, endpoint.api_key, endpoint.model)

    def make_executor(self, base_url: str | None, api_key: str | None, served_model: str | None,
                      ) -> BatchExecutor | None:
        """The executor of these settings: the Batch API at ``base_url``, or vLLM serving :attr:`vllm_model`
        under the name ``served_model`` (None: its own); None when online."""
        if self.executor == "online":
            return None
        if self.executor == "openai-batch":
            if not base_url:
                raise FieldError("base_url", "give the Batch API's --base-url for --executor openai-batch")
            from .openai_batch import OpenAIBatchAPI
            return OpenAIBatchAPI(base_url=base_url, api_key=api_key, wait=self.wait, poll_seconds=self.poll_seconds)
        if not self.vllm_model:
            raise FieldError("vllm_model", "give the model vLLM loads for --executor vllm-batch")
        from .vllm_batch import VllmRunBatch
        return VllmRunBatch(model=self.vllm_model, served_model_name=served_model, vllm=self.vllm_command,
                            extra_args=self.vllm_args, env=self.environment)


MAX_PASSES = 12
"""Passes in one run at most (each invalid answer's re-ask and each requeued line takes one)."""


def run_batched(executor: BatchExecutor, store: BatchStore, console: Console,
                judge_pass: Callable[[dict], tuple[RunStats, Folded]],
                backends: Callable[[], dict]) -> tuple[RunStats, Folded]:
    """Passes of ``judge_pass`` (given fresh batch backends) with a batch in between, until nothing is
    deferred or a batch is still running; the last pass's counters, and what all passes folded."""
    def say(line: str) -> None:
        console.print(f"{executor.name}: {line}", highlight=False, soft_wrap=True)

    total = Folded()
    if store.in_flight() and not executor.advance(store, say):  # a batch of an earlier run is still running
        return RunStats(), total
    for number in range(MAX_PASSES):
        stats, folded = judge_pass(backends())
        total.kept = folded.kept if number == 0 else total.kept  # later passes keep the earlier passes' verdicts
        total.new += folded.new
        total.held += folded.held
        total.categories.update(folded.categories)
        if not stats.deferred:
            return stats, total
        say(f"{stats.deferred} items wait for {store.queued} queued requests")
        if not executor.advance(store, say):
            say("the batch is still running: rerun the same command to collect it (nothing is sent twice)")
            return stats, total
    say(f"{stats.deferred} items still wait after {MAX_PASSES} passes: rerun to go on")
    return stats, total
