"""The generation backends: each turns sample requests into model outputs, yielded as they finish.

``TransformersEngine`` (batched ``model.generate``, CPU or GPU), ``VLLMEngine`` (vLLM's offline
engine; ``VLLMDataParallelEngine``, vLLM's AsyncLLM, for data parallelism) and ``OpenAIEngine`` (chat
completions from one or several OpenAI-compatible servers). A new backend
is one more class with ``backend``, ``seeding``, ``tokenizer`` and ``run``, chosen in ``generation.generate``.

Each asks in its ``prompt`` style (``steps`` or ``reasoning``: see :class:`GenerationSampling`) through the
model's own chat template. The local engines return the raw completion with the rendered prompt (a
template ending with ``<think>\n`` opened the thinking); ``OpenAIEngine`` returns the server's separate
``reasoning_content`` (or ``reasoning``) as the thinking: serve a reasoning model with
``vllm serve MODEL --reasoning-parser deepseek_r1`` (llama.cpp: ``llama-server --reasoning-format deepseek``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from quantmedic.judge.step_format import ModelOutput, reasoning_messages, render_prompt, step_messages
from quantmedic.taxonomy.records import Problem

from .generation_config import PARALLEL, SamplingSettings


def sample_seed(seed: int, problem_id: str, index: int) -> int:
    """The seed of one sample, independent of batching and of which problems run.

    >>> sample_seed(0, "p-1", 0) == sample_seed(0, "p-1", 0) != sample_seed(0, "p-1", 1)
    True
    """
    digest = hashlib.sha256(f"{seed}|{problem_id}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class Request:
    """One sample to generate."""

    problem: Problem
    index: int
    seed: int


def chat_messages(problem: Problem, system: str | None, prompt: str) -> list[dict[str, str]]:
    """The chat messages of one problem in a prompt style (``steps`` or ``reasoning``)."""
    return reasoning_messages(problem, system) if prompt == "reasoning" else step_messages(problem, system)


def render(tokenizer: Any, problem: Problem, system: str | None, prompt: str) -> str:
    """The prompt text through the tokenizer's own chat template, ready for the assistant's turn."""
    if prompt != "reasoning":
        return render_prompt(tokenizer, problem, system)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; the reasoning prompt needs a chat model")
    return tokenizer.apply_chat_template(chat_messages(problem, system, prompt), tokenize=False,
                                         add_generation_prompt=True)


class Engine(Protocol):
    """A backend: turns requests into completions, yielded as they finish (any order)."""

    backend: str
    seeding: str  # "per-sample", or "per-batch" where one generator serves a whole batch
    tokenizer: Any  # the model's tokenizer where it is at hand (token counts are exact), else None

    def run(self, requests: Sequence[Request], settings: SamplingSettings) -> Iterator[tuple[Request, ModelOutput]]: ...


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends a completion: the generation config's and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    return ids | ({tokenizer.eos_token_id} - {None})


def cut_at_eos(tokens: list[int], eos: set[int]) -> tuple[list[int], bool]:
    """The generated tokens before the first end-of-sequence id, and whether there was one.

    >>> cut_at_eos([5, 6, 2, 7], {2}), cut_at_eos([5, 6], {2})
    (([5, 6], True), ([5, 6], False))
    """
    stop = next((i for i, t in enumerate(tokens) if t in eos), None)
    return (tokens, False) if stop is None else (tokens[:stop], True)


@dataclass
class TransformersEngine:
    """Batched ``model.generate`` (left padding); sampling is seeded per batch with its first request's seed."""

    loaded: Any
    batch_size: int = 8
    backend: str = "transformers"
    seeding: str = "per-batch"
    system: str | None = None
    prompt: str = "steps"

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def simulation(self) -> str | None:
        """What of the checkpoint's quantization the forward pass simulates (see :mod:`.simulate`)."""
        return getattr(self.loaded, "simulation", None)

    def run(self, requests: Sequence[Request], settings: SamplingSettings) -> Iterator[tuple[Request, ModelOutput]]:
        import torch

        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        eos = eos_ids(model, tokenizer)
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            prompts = [render(tokenizer, r.problem, self.system, self.prompt) for r in batch]
            encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            sampling = ({"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
                        if settings.temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None,
                                                          "top_k": None})
            torch.manual_seed(batch[0].seed)
            with torch.inference_mode():
                output = model.generate(**encoded, max_new_tokens=settings.max_tokens, pad_token_id=tokenizer.pad_token_id,
                                        eos_token_id=sorted(eos), **sampling)
            generated = output[:, encoded["input_ids"].shape[1]:].tolist()
            for request, tokens, prompt in zip(batch, generated, prompts):
                kept, stopped = cut_at_eos(tokens, eos)
                yield request, ModelOutput(text=tokenizer.decode(kept, skip_special_tokens=True),
                                          finish_reason="stop" if stopped else "length",
                                          completion_tokens=len(kept) + stopped, prompt=prompt)


@dataclass
class VLLMEngine:
    """vLLM's offline engine; requests go in chunks of ``chunk_size`` so finished work is written as it comes.

    ``engine_options`` are vLLM engine arguments (``vllm_options``: the KV-cache dtype, tensor and pipeline
    parallel sizes, the executor backend); the parallel ones given are the attempts' ``parallel`` record."""

    model_dir: str
    kv_cache_dtype: str | None = None
    chunk_size: int = 256
    system: str | None = None
    prompt: str = "steps"
    engine_options: dict = field(default_factory=dict)
    backend: str = "vllm"
    seeding: str = "per-sample"

    def __post_init__(self) -> None:
        from vllm import LLM

        self.llm = LLM(model=self.model_dir, **self.options())
        self.tokenizer = self.llm.get_tokenizer()

    def options(self) -> dict[str, Any]:
        return {"kv_cache_dtype": self.kv_cache_dtype or "auto", **self.engine_options}

    @property
    def provenance(self) -> dict[str, Any]:
        """What the attempts record of how the engine ran: its parallelism, when not vLLM's default."""
        parallel = {k: v for k, v in self.engine_options.items() if k in PARALLEL}
        return {"parallel": parallel} if parallel else {}

    def _generate(self, prompts: list[str], params: list[Any]) -> list[Any]:
        return self.llm.generate(prompts, params, use_tqdm=False)

    def run(self, requests: Sequence[Request], settings: SamplingSettings) -> Iterator[tuple[Request, ModelOutput]]:
        from vllm import SamplingParams

        for start in range(0, len(requests), self.chunk_size):
            chunk = requests[start : start + self.chunk_size]
            prompts = [render(self.tokenizer, r.problem, self.system, self.prompt) for r in chunk]
            params = [SamplingParams(n=1, temperature=settings.temperature, top_p=settings.top_p,
                                     max_tokens=settings.max_tokens, seed=r.seed) for r in chunk]
            for request, output, prompt in zip(chunk, self._generate(prompts, params), prompts):
                choice = output.outputs[0]
                yield request, ModelOutput(text=choice.text, finish_reason=choice.finish_reason,
                                          completion_tokens=len(choice.token_ids), prompt=prompt)


@dataclass
class VLLMDataParallelEngine(VLLMEngine):
    """``data_parallel_size > 1``: vLLM's ``AsyncLLM``, which starts one engine per replica and balances the
    requests between them itself (as ``vllm serve --data-parallel-size`` does); vLLM's offline ``LLM`` class
    refuses data parallelism in one process. Each chunk's requests are all in flight at once."""

    def __post_init__(self) -> None:
        import asyncio
        import inspect

        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.loop = asyncio.new_event_loop()
        args = AsyncEngineArgs(model=self.model_dir, **self.options())

        async def start() -> Any:
            return AsyncLLM.from_engine_args(args)

        self.llm = self.loop.run_until_complete(start())
        tokenizer = self.llm.get_tokenizer()
        self.tokenizer = self.loop.run_until_complete(tokenizer) if inspect.isawaitable(tokenizer) else tokenizer
        self.requests = 0

    def _generate(self, prompts: list[str], params: list[Any]) -> list[Any]:
        import asyncio

        async def one(prompt: str, sampling: Any, request_id: str) -> Any:
            final = None
            async for output in self.llm.generate(prompt, sampling, request_id=request_id):
                final = output
            return final

        async def together(first: int) -> list[Any]:
            return await asyncio.gather(*(one(p, s, f"quantmedic-{first + i}") for i, (p, s) in
                                          enumerate(zip(prompts, params))))

        first, self.requests = self.requests, self.requests + len(prompts)
        return self.loop.run_until_complete(together(first))


def message_reasoning(message: Any) -> str | None:
    """A chat message's separate thinking: ``reasoning_content``, else ``reasoning``; None when it has none
    (the SDK's message, or its JSON object)."""
    extra = message if isinstance(message, dict) else getattr(message, "model_extra", None) or {}
    for name in ("reasoning_content", "reasoning"):
        value = _field(message, name) or extra.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


def chat_body(model_name: str, request: Request, settings: SamplingSettings, system: str | None,
              prompt: str) -> dict[str, Any]:
    """The chat-completion request of one sample (as sent online, and as a batch file's request body)."""
    return {"model": model_name, "messages": chat_messages(request.problem, system, prompt), "n": 1,
            "temperature": settings.temperature, "top_p": settings.top_p, "max_tokens": settings.max_tokens,
            "seed": request.seed}


def chat_output(response: Any) -> ModelOutput:
    """A chat completion (the SDK's object, or its JSON body from a batch) as a model output: the content,
    the separate thinking, the finish reason and the completion tokens."""
    choice = _field(response, "choices")[0]
    message, usage = _field(choice, "message"), _field(response, "usage")
    return ModelOutput(text=_field(message, "content") or "", finish_reason=_field(choice, "finish_reason"),
                       completion_tokens=_field(usage, "completion_tokens") if usage is not None else None,
                       reasoning=message_reasoning(message))


class LeastInFlight:
    """Clients of several servers of one model: each request goes to the one with the fewest in flight
    (the first of them on a tie, taken in turn), so a faster server takes more."""

    def __init__(self, clients: Sequence[Any]):
        import threading

        self.clients, self.in_flight, self.served = list(clients), [0] * len(clients), [0] * len(clients)
        self.lock, self.turn = threading.Lock(), 0

    def take(self) -> int:
        with self.lock:
            fewest = min(self.in_flight)
            order = [(self.turn + k) % len(self.clients) for k in range(len(self.clients))]
            index = next(i for i in order if self.in_flight[i] == fewest)
            self.turn = index + 1
            self.in_flight[index] += 1
            self.served[index] += 1
            return index

    def give_back(self, index: int) -> None:
        with self.lock:
            self.in_flight[index] -= 1


@dataclass
class OpenAIEngine:
    """Chat completions through the openai SDK, ``concurrency`` requests at a time per server; a message's
    ``reasoning_content`` (vLLM's reasoning parsers, llama.cpp) or ``reasoning`` (newer vLLM) is the thinking.
    Several ``base_url`` of one model share the requests (:class:`LeastInFlight`); the attempts record them all."""

    base_url: str | Sequence[str]
    model_name: str
    api_key: str | None = None
    concurrency: int = 4
    timeout: float = 600.0
    max_retries: int = 5
    system: str | None = None
    prompt: str = "steps"
    backend: str = "openai"
    seeding: str = "per-sample"
    tokenizer: Any = None

    @property
    def endpoints(self) -> tuple[str, ...]:
        return (self.base_url,) if isinstance(self.base_url, str) else tuple(self.base_url)

    @property
    def provenance(self) -> dict[str, Any]:
        return {"endpoints": list(self.endpoints)}

    def _complete(self, client: Any, request: Request, settings: SamplingSettings) -> ModelOutput:
        body = chat_body(self.model_name, request, settings, self.system, self.prompt)
        return chat_output(client.chat.completions.create(**body))

    def _complete_on_any(self, servers: LeastInFlight, request: Request, settings: SamplingSettings) -> ModelOutput:
        index = servers.take()
        try:
            return self._complete(servers.clients[index], request, settings)
        finally:
            servers.give_back(index)

    def run(self, requests: Sequence[Request], settings: SamplingSettings) -> Iterator[tuple[Request, ModelOutput]]:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        from openai import OpenAI

        servers = LeastInFlight([OpenAI(base_url=url, api_key=self.api_key or "none", timeout=self.timeout,
                                        max_retries=self.max_retries) for url in self.endpoints])
        pool = ThreadPoolExecutor(max_workers=self.concurrency * len(servers.clients))
        try:
            futures = {pool.submit(self._complete_on_any, servers, r, settings): r for r in requests}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            for client in servers.clients:
                client.close()
