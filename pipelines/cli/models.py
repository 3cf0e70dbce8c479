"""``quantmedic quantize`` and ``generate``.

Every option's default and help come from :class:`QuantizeSettings` and :class:`GenerationSettings`;
bad settings are usage errors (exit code 2). torch, the quantization tools and vLLM are imported
only when a command runs, so ``quantmedic --help`` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from quantmedic.judge.batch_job import BatchSettings
from quantmedic.judge.openai_batch import BatchAPIError
from quantmedic.judge.vllm_batch import BatchFailed

from quantmedic.pipelines.evaluation.benchmarks import BenchmarkSettings
from quantmedic.pipelines.evaluation.grading import grade_file
from quantmedic.pipelines.models.batch_engine import BatchRefused
from quantmedic.pipelines.models.generation import generate
from quantmedic.pipelines.models.generation_config import PARALLEL, GenerationSettings
from quantmedic.pipelines.models.loading import check_model
from quantmedic.pipelines.models.quantize import quantize
from quantmedic.pipelines.models.quantize_config import QuantizeSettings
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.outputs import check_output_file

from .console import (EXIT_ABORTED, Commands, build_settings, described, endpoint_errors, error, hub_errors,
                      no_new_empty_file, stderr, usage_errors)
from .judge import B, BatchDir, PollSeconds, VllmArgs, VllmCommand, VllmEnv, Wait, usage_error

commands = Commands()
Q = QuantizeSettings()
G = GenerationSettings()


@commands.command("quantize")
def quantize_command(
    model: Annotated[str, typer.Argument(help="Model folder (HF format) to quantize.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the quantized checkpoint (not the model folder; checked, with MODEL and --calibration, before anything is loaded).")],
    method: Annotated[str, described(QuantizeSettings, "method")] = Q.method,
    bits: Annotated[Optional[int], described(QuantizeSettings, "bits")] = None,
    group_size: Annotated[int, described(QuantizeSettings, "group_size")] = Q.group_size,
    calibration: Annotated[str, described(QuantizeSettings, "calibration")] = Q.calibration,
    num_samples: Annotated[int, described(QuantizeSettings, "num_samples")] = Q.num_samples,
    max_seq_length: Annotated[int, described(QuantizeSettings, "max_seq_length")] = Q.max_seq_length,
    tool: Annotated[str, described(QuantizeSettings, "tool")] = Q.tool,
    kv_cache: Annotated[Optional[str], described(QuantizeSettings, "kv_cache")] = None,
    rotation: Annotated[str, described(QuantizeSettings, "rotation")] = Q.rotation,
    simulate: Annotated[bool, described(QuantizeSettings, "simulate")] = Q.simulate,
    calibrate_on: Annotated[str, described(QuantizeSettings, "calibrate_on")] = Q.calibrate_on,
) -> None:
    """Quantize a model into any format of the low-bit grid (GPTQ, AWQ, W8A8, fp8, NVFP4, MXFP4, W4A4, or only the
    KV cache); the settings are saved beside it and travel into every attempt."""
    settings = build_settings(QuantizeSettings, method=method, bits=bits, group_size=group_size,
                              calibration=calibration, num_samples=num_samples, max_seq_length=max_seq_length, tool=tool,
                              kv_cache=kv_cache, rotation=rotation, simulate=simulate, calibrate_on=calibrate_on)
    with usage_errors(), hub_errors(model):
        record = quantize(model, out_dir=out, settings=settings)
    extra = record.extra
    stderr.print(f"wrote {out}: {record.method} {record.bits}-bit, group {record.group_size}, {record.format} "
                 f"({record.tool}, {extra.get('calibration_samples')} calibration samples of {extra.get('calibration')} "
                 f"on {extra.get('calibrate_on')}; KV cache {record.kv_cache_dtype or 'unquantized'}, rotation "
                 f"{extra.get('rotation')}, simulate {extra.get('simulate')})", highlight=False, soft_wrap=True)


def given(ctx: typer.Context, parameters: dict[str, str], **values: object) -> dict[str, object]:
    """The settings given on the command line or by their variables (a preset fills the others);
    ``parameters`` maps a setting to its parameter where the names differ."""
    def source(name: str) -> str | None:  # typer ships its own click: compare the source by its name
        return getattr(ctx.get_parameter_source(parameters.get(name, name)), "name", None)

    return {k: v for k, v in values.items() if source(k) != "DEFAULT"}


BaseUrls = Annotated[Optional[list[str]], described(GenerationSettings, "base_url", "--base-url",
                                                    envvar="QUANTMEDIC_GENERATE_BASE_URL")]
TP = Annotated[int, described(GenerationSettings, "tensor_parallel_size")]
PP = Annotated[int, described(GenerationSettings, "pipeline_parallel_size")]
DP = Annotated[int, described(GenerationSettings, "data_parallel_size")]
Executor = Annotated[Optional[str], described(GenerationSettings, "distributed_executor_backend")]
GenExecutor = Annotated[str, typer.Option("--executor", help=(
    "online (the backend's own requests, the default), vllm-batch (vLLM's offline runner `vllm run-batch` on this "
    "machine, loading --vllm-model, default MODEL; --vllm-arg and --vllm-env set it up) or openai-batch (the "
    "OpenAI Batch API at --base-url: half the price, a 24-hour window; a rerun collects instead of sending "
    "again). Either sends the openai backend's chat requests in the OpenAI batch file format, kept in "
    "--batch-dir; the attempts record the executor."))]
GenVllmModel = Annotated[Optional[str], typer.Option("--vllm-model", help=(
    "For vllm-batch: the model vLLM loads (a local folder or an HF id; default MODEL), served as --model-name."))]


@commands.command("generate")
def generate_command(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model folder or Hugging Face id (for --backend openai: a label, or "
                                              "the folder whose quantization record to attach).")],
    benchmark: Annotated[str, described(BenchmarkSettings, "name", "--benchmark")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Attempts JSONL (not the --benchmark file); appended to, and an interrupted run "
                                                          "resumes where it stopped.")],
    backend: Annotated[str, described(GenerationSettings, "backend")] = G.backend,
    preset: Annotated[Optional[str], described(GenerationSettings, "preset")] = None,
    prompt: Annotated[str, described(GenerationSettings, "prompt")] = G.prompt,
    sample_seeds: Annotated[str, described(GenerationSettings, "sample_seeds")] = G.sample_seeds,
    n: Annotated[int, described(GenerationSettings, "n", "--n")] = G.n,
    temperature: Annotated[float, described(GenerationSettings, "temperature")] = G.temperature,
    top_p: Annotated[float, described(GenerationSettings, "top_p")] = G.top_p,
    max_tokens: Annotated[int, described(GenerationSettings, "max_tokens")] = G.max_tokens,
    seed: Annotated[int, described(GenerationSettings, "seed")] = G.seed,
    limit: Annotated[Optional[int], described(BenchmarkSettings, "limit")] = None,
    split: Annotated[Optional[str], described(BenchmarkSettings, "split")] = None,
    kv_cache_dtype: Annotated[Optional[str], described(GenerationSettings, "kv_cache_dtype")] = None,
    base_url: BaseUrls = None,
    model_name: Annotated[Optional[str], described(GenerationSettings, "served_model", "--model-name")] = None,
    api_key_env: Annotated[str, described(GenerationSettings, "api_key_env")] = G.api_key_env,
    batch_size: Annotated[int, described(GenerationSettings, "batch_size")] = G.batch_size,
    concurrency: Annotated[int, described(GenerationSettings, "concurrency")] = G.concurrency,
    simulate: Annotated[bool, described(GenerationSettings, "simulate")] = G.simulate,
    tensor_parallel_size: TP = G.tensor_parallel_size, pipeline_parallel_size: PP = G.pipeline_parallel_size,
    data_parallel_size: DP = G.data_parallel_size, distributed_executor_backend: Executor = None,
    grade: Annotated[bool, typer.Option(help="Grade the attempts with math-verify once generation is done "
                                             "(as `quantmedic grade` does).")] = True,
    adapter: Annotated[Optional[Path], typer.Option(help="A LoRA adapter folder (`quantmedic train dpo`) to apply; "
                                                        "the attempts' model becomes MODEL+ADAPTER (transformers "
                                                        "backend).")] = None,
    executor: GenExecutor = B.executor, batch_dir: BatchDir = None, vllm_model: GenVllmModel = None,
    vllm_command: VllmCommand = B.vllm_command, wait: Wait = B.wait, poll_seconds: PollSeconds = B.poll_seconds,
    vllm_arg: VllmArgs = None, vllm_env: VllmEnv = None,
) -> None:
    """Generate step-by-step solutions ("Step 1: ...", a final \\boxed{}) with a full-precision or quantized model.

    A reasoning model: [bold]--preset reasoning[/bold] (the reference study's protocol: temperature 0.6, top-p 0.95, 32768 tokens, 3 samples seeded 42, 43, 44, the model's own chat template with no step format); options given explicitly override the preset's values. Each attempt keeps its thinking apart from its solution. A reasoning model served by vLLM: [italic]vllm serve MODEL --reasoning-parser deepseek_r1[/italic], then --base-url (its reasoning_content is the thinking); repeat --base-url for several servers of the model. Many GPUs (vLLM): [bold]--tensor-parallel-size[/bold] splits each layer over a node's GPUs, [bold]--pipeline-parallel-size[/bold] the layers into stages, [bold]--data-parallel-size[/bold] runs replicas that share the requests; over several nodes, start a Ray cluster and give [bold]--distributed-executor-backend ray[/bold]. The sizes are recorded in every attempt.
    """
    settings = build_settings(GenerationSettings, {"served_model": "--model-name"}, **given(
        ctx, {"served_model": "model_name"}, backend=backend, preset=preset, prompt=prompt, sample_seeds=sample_seeds, n=n, temperature=temperature,
        top_p=top_p, max_tokens=max_tokens, seed=seed, kv_cache_dtype=kv_cache_dtype, base_url=base_url,
        served_model=model_name, api_key_env=api_key_env, batch_size=batch_size, concurrency=concurrency,
        simulate=simulate, **{k: ctx.params[k] for k in PARALLEL}))
    batch = batch_settings(executor=executor, batch_dir=batch_dir, vllm_model=vllm_model, vllm_command=vllm_command,
                           wait=wait, poll_seconds=poll_seconds, vllm_args=vllm_arg or (), vllm_env=vllm_env or ())
    check_output_file(out, inputs=[benchmark], what="attempts")  # the output, the model and the problems first
    check_inputs(model, settings, batch, adapter)
    problems = build_settings(BenchmarkSettings, {"name": "--benchmark"}, name=benchmark, split=split, limit=limit).load()
    with usage_errors(), no_new_empty_file(out), hub_errors(model), endpoint_errors(", ".join(settings.endpoints)), \
            batch_errors():
        summary = generate(model, problems, out_path=out, settings=settings, api_key=os.environ.get(api_key_env),
                           adapter=adapter, console=stderr, batch=batch)
    stderr.print(f"wrote {summary.written} attempts to {out} ({summary.skipped} of {summary.problems} problems were "
                 f"already done; {summary.completion_tokens} tokens, {summary.tokens_per_second:.1f} tok/s)",
                 highlight=False)
    if grade:
        grade_file(out, stderr)


def batch_settings(**values: object) -> BatchSettings:
    """The batch executor's settings; options that do not fit are one line naming the option, exit 2."""
    try:
        return build_settings(BatchSettings, **values)
    except typer.BadParameter as error:
        raise usage_error(error.param_hint, error.message) from None


def check_inputs(model: str, settings: GenerationSettings, batch: BatchSettings, adapter: Path | None) -> None:
    """The model (a folder or Hub id, unless a server or the Batch API holds it) and the adapter, before
    anything loads."""
    served = settings.backend == "openai" or batch.executor == "openai-batch"
    if batch.executor == "vllm-batch":
        check_model(batch.vllm_model or model)
    elif not served or Path(model).exists():
        check_model(model)
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise InputError(adapter, "not an adapter folder (no adapter_config.json); train one with `quantmedic train "
                                  "dpo`", field="--adapter")


@contextmanager
def batch_errors() -> Iterator[None]:
    """A batch that cannot run (vLLM exits, the Batch API refuses) or samples it refused: one line, exit 1
    (the attempts that came back are written)."""
    try:
        yield
    except (BatchFailed, BatchAPIError, BatchRefused) as failure:
        error(str(failure).splitlines()[0])  # a vLLM failure's first line names its log, which holds the rest
        raise typer.Exit(EXIT_ABORTED) from None
