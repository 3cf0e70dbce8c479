"""Generation through a batch executor (``generate --executor vllm-batch`` or ``openai-batch``): the same chat
requests as the ``openai`` backend, carried as batches in the OpenAI batch file format.

:class:`BatchEngine` is an :class:`~.engines.Engine` whose :meth:`~BatchEngine.run` answers each sample from
the run's :class:`~quantmedic.judge.batch_store.BatchStore` (``<out>.batch`` beside the attempts by default):
a sample whose request has a result comes back through the same parsing as an online chat completion
(:func:`~.engines.chat_output`: content, thinking, finish reason, completion tokens); the others are
queued, the executor (:class:`~quantmedic.judge.vllm_batch.VllmRunBatch`,
:class:`~quantmedic.judge.openai_batch.OpenAIBatchAPI`) runs a batch of them, and the next pass reads
the answers. A request's id is a digest of its body, so a rerun with the same folder finds the answers
(or the batch still running) instead of sending anything twice; an expired, never-run, rate-limited or
server-failed line is queued again (up to ``max_requeues`` times). A batch still running (the Batch API's
24-hour window) ends the run with what has come back: rerun the same command to collect it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantmedic.judge.batch_files import BatchResult, custom_id_for
from quantmedic.judge.batch_job import MAX_PASSES, BatchSettings
from quantmedic.judge.batch_store import BatchExecutor, BatchStore
from quantmedic.judge.cache import clean
from quantmedic.judge.step_format import ModelOutput

from .engines import Request, chat_body, chat_output
from .generation_config import GenerationSettings, SamplingSettings


class BatchRefused(RuntimeError):
    """Some samples' requests were refused by the batch (or still failed after every requeue); the other
    samples' attempts are written before this is raised."""


@dataclass
class BatchEngine:
    """Samples as chat requests in ``folder``'s batch store, run by ``executor``."""

    executor: BatchExecutor
    folder: Path
    model_name: str
    """The model the requests name (``--model-name``, else MODEL)."""
    system: str | None = None
    prompt: str = "steps"
    say: Callable[[str], None] = print
    endpoints: tuple[str, ...] = ()
    max_requeues: int = 3
    backend: str = "openai"
    """The attempts' backend: chat completions, as the online ``openai`` backend; ``provenance`` adds the executor."""
    seeding: str = "per-sample"
    tokenizer: Any = None
    refused: list[str] = field(default_factory=list)

    @property
    def provenance(self) -> dict[str, Any]:
        """What the attempts record of where they ran: the executor (and the Batch API's URL)."""
        return {"executor": self.executor.name, **({"endpoints": list(self.endpoints)} if self.endpoints else {})}

    def run(self, requests: Sequence[Request], settings: SamplingSettings) -> Iterator[tuple[Request, ModelOutput]]:
        """Each sample with its answer, pass by pass with a batch in between; raises :class:`BatchRefused`
        at the end when some were refused, and returns early when a batch is still running."""
        pending: dict[str, tuple[dict, list[Request]]] = {}
        for request in requests:  # two samples with the same request body share its answer
            body = chat_body(self.model_name, request, settings, self.system, self.prompt)
            pending.setdefault(custom_id_for(body), (body, []))[1].append(request)
        with BatchStore(self.folder) as store:
            for _ in range(MAX_PASSES):
                yield from self._answered(store, pending)
                if not pending:
                    break
                waiting = sum(len(samples) for _, samples in pending.values())
                self.say(f"{waiting} samples wait ({store.queued} requests queued, {store.in_flight()} in a batch)")
                if not self.executor.advance(store, self._say):
                    self.say("the batch is still running: rerun the same command to collect it (nothing is sent "
                             "twice)")
                    return
            else:
                self.say(f"{len(pending)} requests still wait after {MAX_PASSES} passes: rerun to go on")
        if self.refused:
            raise BatchRefused(f"{len(self.refused)} samples were refused by {self.executor.name} (the others are "
                               f"written): {self.refused[0]}")

    def _say(self, line: str) -> None:
        self.say(f"{self.executor.name}: {line}")

    def _answered(self, store: BatchStore, pending: dict[str, tuple[dict, list[Request]]],
                  ) -> Iterator[tuple[Request, ModelOutput]]:
        """The pending samples that have an answer now (dropped from ``pending``, as are refused ones);
        the others queued, or queued again when their line failed and is worth another batch."""
        for custom_id, (body, samples) in list(pending.items()):
            result = store.result(custom_id)
            if result is None:
                store.want(custom_id, body)
                continue
            output, why = self._output(store, result, body)
            if output is None and why is None:
                continue  # requeued
            del pending[custom_id]
            if output is None:
                self.refused += [f"{r.problem.id} sample {r.index}: {why}" for r in samples]
                continue
            for request in samples:
                yield request, output

    def _output(self, store: BatchStore, result: BatchResult, body: dict) -> tuple[ModelOutput | None, str | None]:
        """``(output, None)`` for an answer, ``(None, why)`` for a refusal, ``(None, None)`` when requeued."""
        if result.ok:
            try:
                return chat_output(result.body), None
            except (KeyError, IndexError, TypeError, AttributeError):
                return None, "the answer is not a chat completion"
        why = clean(f"{result.error_code or f'HTTP {result.status}'}: {result.error or 'no message'}")
        if not result.retryable:
            return None, why
        if store.tries(result.custom_id) >= self.max_requeues:
            return None, f"{why} after {self.max_requeues + 1} batches"
        store.requeue(result.custom_id, body)
        self._say(f"requeued a failed line ({why})")
        return None, None


def batch_engine_for(batch: BatchSettings, model: str | Path, settings: GenerationSettings, out_path: str | Path, *,
                     api_key: str | None, system: str | None, say: Callable[[str], None]) -> BatchEngine:
    """The engine of ``batch``'s executor for ``generate``: vLLM loads ``--vllm-model`` (default MODEL) and
    serves it as the requests' model; the Batch API is the one --base-url names. Raises ``ValueError``
    (a usage error) when the settings do not fit."""
    name = settings.served_model or str(model)
    endpoints = settings.endpoints
    if batch.executor == "openai-batch" and len(endpoints) != 1:
        raise ValueError("--executor openai-batch needs one --base-url (the Batch API's)")
    base_url = endpoints[0] if batch.executor == "openai-batch" else None
    if batch.executor == "vllm-batch" and not batch.vllm_model:
        batch = batch.model_copy(update={"vllm_model": str(model)})
    executor = batch.make_executor(base_url, api_key, None if name == batch.vllm_model else name)
    out_path = Path(out_path)
    folder = batch.batch_dir or out_path.with_name(f"{out_path.name}.batch")
    return BatchEngine(executor, folder, name, system=system, prompt=settings.prompt, say=say,
                       endpoints=(base_url,) if base_url else ())
