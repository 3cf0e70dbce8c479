"""The ``quantize`` and ``generate`` commands: ``register(app)`` adds them to a typer app.

Bad settings raise ``typer.BadParameter`` (exit code 2); heavy imports (torch, the quantization
tools, vLLM) happen inside the commands, so ``quantmedic --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

_stderr = Console(stderr=True)


def quantize_command(
    model: Annotated[str, typer.Argument(help="Model folder (HF format) to quantize.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the quantized checkpoint.")],
    method: Annotated[str, typer.Option(help="gptq, awq or w8a8 (SmoothQuant + GPTQ, 8-bit weights and "
                                             "activations).")] = "gptq",
    bits: Annotated[Optional[int], typer.Option(min=2, max=8, help="Weight bits (default 4; 8 for w8a8).")] = None,
    group_size: Annotated[int, typer.Option(help="Weights per quantization group; -1: one per output channel. "
                                                 "Ignored by w8a8.")] = 128,
    calibration: Annotated[str, typer.Option(help="Calibration problems: a shipped benchmark (gsm8k, math500, "
        "aime24), a JSONL file or a Hugging Face dataset; rendered with the step prompt and their reference "
        "solutions.")] = "gsm8k",
    num_samples: Annotated[int, typer.Option(min=1, help="Calibration samples.")] = 128,
    max_seq_length: Annotated[int, typer.Option(min=16, help="Calibration tokens per sample.")] = 512,
    tool: Annotated[str, typer.Option(help="llmcompressor, gptqmodel or auto (llm-compressor; GPTQModel for AWQ "
                                           "without a GPU).")] = "auto",
) -> None:
    """Quantize a model with GPTQ, AWQ or W8A8; the settings are saved beside it and travel into every attempt."""
    from .quantize import METHODS, TOOLS, quantize

    if method not in METHODS:
        raise typer.BadParameter(f"choose one of {', '.join(METHODS)}", param_hint="--method")
    if tool not in TOOLS:
        raise typer.BadParameter(f"choose one of {', '.join(TOOLS)}", param_hint="--tool")
    bits = bits or (8 if method == "w8a8" else 4)
    try:
        record = quantize(model, method=method, bits=bits, group_size=group_size, calibration=calibration,  # type: ignore[arg-type]
                          out_dir=out, tool=tool, num_samples=num_samples, max_seq_length=max_seq_length)  # type: ignore[arg-type]
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    _stderr.print(f"wrote {out}: {record.method} {record.bits}-bit, group {record.group_size}, {record.format} "
                  f"({record.tool}, {record.extra.get('calibration_samples')} calibration samples)", highlight=False)


def generate_command(
    model: Annotated[str, typer.Argument(help="Model folder or Hugging Face id (for --backend openai: a label, or "
                                              "the folder whose quantization record to attach).")],
    benchmark: Annotated[str, typer.Option(help="math500, gsm8k, aime24, a JSONL file or a Hugging Face dataset.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Attempts JSONL; appended to, and an interrupted run "
                                                          "resumes where it stopped.")],
    backend: Annotated[str, typer.Option(help="auto (vllm with a GPU, openai with --base-url, else transformers), "
                                              "transformers, vllm or openai.")] = "auto",
    n: Annotated[int, typer.Option("--n", min=1, help="Samples per problem.")] = 1,
    temperature: Annotated[float, typer.Option(min=0.0, help="0: greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    max_tokens: Annotated[int, typer.Option(min=1, help="Token limit of one solution.")] = 2048,
    seed: Annotated[int, typer.Option(help="Base seed; each sample's seed derives from it, the problem and the "
                                           "sample index.")] = 0,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N problems.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Dataset split (Hugging Face datasets).")] = None,
    kv_cache_dtype: Annotated[Optional[str], typer.Option(help="vLLM KV-cache dtype, e.g. fp8 (recorded in the "
                                                               "attempts' quantization).")] = None,
    base_url: Annotated[Optional[str], typer.Option(envvar="QUANTMEDIC_GENERATE_BASE_URL",
                                                    help="OpenAI-compatible endpoint (the openai backend).")] = None,
    model_name: Annotated[Optional[str], typer.Option(help="Model name served at --base-url (default: MODEL).")] = None,
    api_key_env: Annotated[str, typer.Option(help="Variable holding the endpoint's API key.")] = "OPENAI_API_KEY",
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per batch (transformers).")] = 8,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight (openai).")] = 4,
    grade: Annotated[bool, typer.Option(help="Grade the attempts with math-verify once generation is done "
                                             "(as `quantmedic grade` does).")] = True,
    adapter: Annotated[Optional[Path], typer.Option(help="A LoRA adapter folder (`quantmedic train dpo`) to apply; "
                                                        "the attempts' model becomes MODEL+ADAPTER (transformers "
                                                        "backend).")] = None,
) -> None:
    """Generate step-by-step solutions ("Step 1: ...", a final \\boxed{}) with a full-precision or quantized model."""
    import os

    from .benchmarks import load_benchmark
    from .generation import BACKENDS, generate

    if backend not in BACKENDS:
        raise typer.BadParameter(f"choose one of {', '.join(BACKENDS)}", param_hint="--backend")
    problems = load_benchmark(benchmark, split=split, limit=limit)
    try:
        summary = generate(model, problems, out_path=out, backend=backend, n=n, temperature=temperature,  # type: ignore[arg-type]
                           top_p=top_p, max_tokens=max_tokens, seed=seed, kv_cache_dtype=kv_cache_dtype,
                           base_url=base_url, model_name=model_name, api_key=os.environ.get(api_key_env),
                           batch_size=batch_size, concurrency=concurrency, adapter=adapter, console=_stderr)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    _stderr.print(f"wrote {summary.written} attempts to {out} ({summary.skipped} of {summary.problems} problems were "
                  f"already done; {summary.completion_tokens} tokens, {summary.tokens_per_second:.1f} tok/s)",
                  highlight=False)
    if grade:
        grade_in_place(out)


def grade_in_place(path: Path) -> None:
    """Grade the attempts of ``path`` that are not graded yet, and rewrite it atomically."""
    from quantmedic.taxonomy.jsonl import read_records, write_records
    from quantmedic.taxonomy.records import Attempt

    from .grading import grade_attempts

    attempts = read_records(path, Attempt)
    todo = [i for i, a in enumerate(attempts) if a.grading is None]
    if not todo:
        return
    graded = grade_attempts([attempts[i] for i in todo])
    for i, attempt in zip(todo, graded):
        attempts[i] = attempt
    write_records(path, attempts)
    right = sum(a.correct is True for a in attempts)
    _stderr.print(f"graded {len(todo)} attempts: {right} of {len(attempts)} correct in {path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``quantize`` and ``generate`` to ``app``."""
    app.command("quantize")(quantize_command)
    app.command("generate")(generate_command)
