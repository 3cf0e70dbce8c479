"""``quantmedic judge`` and ``judge-eval``: the batch judging job and the judge's meta-evaluation.

Every judge option's default and help come from :class:`~quantmedic.judge.settings.JudgeSettings`.
Bad options are one line on stderr and exit 2; an endpoint that cannot be reached at all is one line
naming the URL and exit 1, before anything is written.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from quantmedic.judge.batch_job import BatchSettings
from quantmedic.judge.cache import default_cache_path
from quantmedic.judge.job import JudgeJob
from quantmedic.judge.openai_batch import BatchAPIError
from quantmedic.judge.vllm_batch import BatchFailed
from quantmedic.judge.checker_eval import from_json as checker_from_json, to_markdown as checker_markdown
from quantmedic.judge.eval_job import EvalJob, run_judge_eval
from quantmedic.judge.job import dry_run as render_dry_run, run_judge_job
from quantmedic.judge.meta_eval import to_markdown
from quantmedic.judge.preflight import check_job
from quantmedic.judge.runner import JudgeRunAborted
from quantmedic.judge.settings import JudgeSettings, build_job, missing_key_warning
from quantmedic.pipelines.data import SHIPPED, resolve_input
from quantmedic.taxonomy.errors import FieldError
from quantmedic.taxonomy.model import load_taxonomy

from .console import EXIT_ABORTED, EXIT_USAGE, Commands, build_settings, described, stderr, stdout

commands = Commands()
J = JudgeSettings()
B = BatchSettings()
VLLM_BATCH_URL = "http://localhost/vllm-batch/v1"
_SHIPPED_HELP = ", ".join(f"[bold]{name}[/bold]" for name in SHIPPED)
FLAGS = {"base_url": "--base-url", "models": "--model", "prompts": "--prompt"}

BaseUrl = Annotated[Optional[list[str]], described(JudgeSettings, "base_url", "--base-url", envvar="QUANTMEDIC_BASE_URL")]
Model = Annotated[Optional[list[str]], described(JudgeSettings, "models", "--model", "-m")]
ApiKeyEnv = Annotated[str, described(JudgeSettings, "api_key_env")]
Samples = Annotated[int, described(JudgeSettings, "samples")]
Temperature = Annotated[float, described(JudgeSettings, "temperature")]
MaxTokens = Annotated[int, described(JudgeSettings, "max_tokens")]
Seed = Annotated[int, described(JudgeSettings, "seed")]
Concurrency = Annotated[Optional[int], described(JudgeSettings, "concurrency")]
Timeout = Annotated[float, described(JudgeSettings, "timeout")]
MaxRetries = Annotated[int, described(JudgeSettings, "max_retries")]
MaxDelay = Annotated[float, described(JudgeSettings, "max_delay")]
InvalidRetries = Annotated[int, described(JudgeSettings, "invalid_retries")]
ResponseFormatOpt = Annotated[str, described(JudgeSettings, "response_format", "--response-format")]
Transport = Annotated[str, described(JudgeSettings, "transport")]
PromptFiles = Annotated[Optional[list[Path]], described(JudgeSettings, "prompts", "--prompt")]
RetryUnscored = Annotated[bool, described(JudgeSettings, "retry_unscored", "--retry-unscored")]
Scope = Annotated[str, described(JudgeSettings, "scope", "--scope")]
ContextTokens = Annotated[Optional[int], described(JudgeSettings, "context_tokens", "--context-tokens")]
ContextShare = Annotated[float, described(JudgeSettings, "context_share", "--context-share")]
TokenizerFile = Annotated[Optional[Path], described(JudgeSettings, "tokenizer", "--tokenizer")]
CharsPerToken = Annotated[float, described(JudgeSettings, "chars_per_token", "--chars-per-token")]
MaxTokensPerItem = Annotated[Optional[int], described(JudgeSettings, "max_tokens_per_item", "--max-tokens-per-item")]
Checker = Annotated[str, described(JudgeSettings, "checker", "--checker")]
ExecutorOpt = Annotated[str, described(BatchSettings, "executor", "--executor")]
BatchDir = Annotated[Optional[Path], described(BatchSettings, "batch_dir", "--batch-dir")]
VllmModel = Annotated[Optional[str], described(BatchSettings, "vllm_model", "--vllm-model")]
VllmCommand = Annotated[str, described(BatchSettings, "vllm_command", "--vllm-command")]
Wait = Annotated[bool, described(BatchSettings, "wait", "--wait")]
PollSeconds = Annotated[float, described(BatchSettings, "poll_seconds", "--poll-seconds")]
VllmArgs = Annotated[Optional[list[str]], described(BatchSettings, "vllm_args", "--vllm-arg")]
VllmEnv = Annotated[Optional[list[str]], described(BatchSettings, "vllm_env", "--vllm-env")]
TaxonomyFile = Annotated[Optional[Path], typer.Option("--taxonomy", help="Your own taxonomy YAML/JSON "
    "(start from `quantmedic taxonomy`). Default: the reference study's.")]
Format = Annotated[str, typer.Option("--format", help="auto, quantmedic, processbench, gsm8k-solutions or text.")]
Limit = Annotated[Optional[int], typer.Option(min=1, help="Judge at most this many items.")]
CacheFile = Annotated[Optional[Path], typer.Option("--cache", help="SQLite store of answers that makes reruns "
    f"resume. Default: {default_cache_path()}")]


EPILOG = ("Exit codes: 0 done (unscored items are recorded, not fatal), 1 the endpoint refused (wrong key or "
          "model: HTTP 401/403/404) or cannot be reached at all (connection refused, unknown host, no route: checked "
          "on the first requests, with no retries, and nothing is written) or an input file is bad (naming its line "
          "and field), 2 bad options (one line on stderr). Secrets: the API key, and anything shaped like a bearer token or sk- key, is redacted from "
          "every reason, message, cache row and output.")


def usage_error(hint: str | None, message: str) -> typer.Exit:
    """Print one line naming the option; the exit (2) to raise."""
    where = f"invalid value for {hint}: " if hint else ""
    stderr.print(f"[red]error:[/red] {escape(where + message)}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def judge_settings(base_url, model, prompt, **values) -> JudgeSettings:
    """The settings from the shared judge options (a bad combination is one line naming the option, exit 2)."""
    try:
        return build_settings(JudgeSettings, FLAGS, base_url=base_url or [], models=model or [],
                              prompts=prompt or [], **values)
    except typer.BadParameter as error:
        raise usage_error(error.param_hint, error.message) from None


def with_executor(job: JudgeJob, model: type[BatchSettings], **values) -> JudgeJob:
    """``job`` with the batch executor the options name (one line naming the option, exit 2, when they do
    not fit: a batch executor takes exactly one judge, given by --base-url and --model)."""
    try:
        batch = build_settings(model, **values)
        if batch.executor != "online" and len(job.endpoints) != 1:
            raise typer.BadParameter(f"{batch.executor} takes exactly one judge: give --base-url and one --model",
                                     param_hint="--executor")
        return dataclasses.replace(job, executor=batch.executor_for(job.endpoints[0]) if job.endpoints else None,
                                   batch_dir=batch.batch_dir)
    except FieldError as error:
        raise usage_error(f"--{error.field.replace('_', '-')}", str(error)) from None
    except typer.BadParameter as error:
        raise usage_error(error.param_hint, error.message) from None


def warn_if_no_key(settings: JudgeSettings) -> None:
    """One warning line when the API key variable is unset (a run this refuses never gets here)."""
    if (warning := missing_key_warning(settings)) is not None:
        stderr.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False, soft_wrap=True)


@contextmanager
def reaching_the_endpoint() -> Iterator[None]:
    """An endpoint nobody answers at becomes one line naming its URL and exit 1 (other refusals are
    the command line's usual one line)."""
    try:
        yield
    except BatchAPIError as error:
        stderr.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_ABORTED) from None
    except BatchFailed as error:  # the first line names the batch and its log; the log holds the rest
        stderr.print(f"[red]error:[/red] {escape(str(error).splitlines()[0])}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_ABORTED) from None
    except JudgeRunAborted as error:
        if not error.unreachable:
            raise
        stderr.print(f"[red]error:[/red] {escape(str(error))}: check --base-url (scheme, host, port, /v1) and that "
                     "the server is running; nothing was written", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_ABORTED) from None


@commands.command(epilog=f"Shipped inputs you can name instead of a path: {_SHIPPED_HELP}. " + EPILOG)
def judge(
    input: Annotated[str, typer.Argument(
        help="Attempts to judge: quantmedic JSONL, ProcessBench JSON/JSONL, the GSM8K model-solutions file, "
             "JSONL with problem + solution text, or a shipped name such as gsm8k-solutions. UTF-8; an exact repeat "
             "of an attempt is judged once, two different attempts under one id are refused (naming both lines).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Verdicts JSONL to write (atomically). "
        "Verdicts already in it that this run does not redo are kept, and an ok verdict in it is never replaced "
        "by an unscored one (a rerun whose requests fail keeps the earlier diagnosis).")] = None,
    base_url: BaseUrl = None, model: Model = None, api_key_env: ApiKeyEnv = J.api_key_env,
    samples: Samples = J.samples, temperature: Temperature = J.temperature, max_tokens: MaxTokens = J.max_tokens, seed: Seed = J.seed,
    taxonomy: TaxonomyFile = None, input_format: Format = "auto",
    include_correct: Annotated[bool, typer.Option(help="Also judge attempts graded correct.")] = False,
    limit: Limit = None, concurrency: Concurrency = None, timeout: Timeout = J.timeout, max_retries: MaxRetries = J.max_retries,
    max_delay: MaxDelay = J.max_delay, invalid_retries: InvalidRetries = J.invalid_retries, response_format: ResponseFormatOpt = J.response_format,
    transport: Transport = J.transport, cache: CacheFile = None, prompt: PromptFiles = None,
    price_input: Annotated[Optional[float], described(JudgeSettings, "price_input")] = None,
    price_output: Annotated[Optional[float], described(JudgeSettings, "price_output")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the response format and the exact messages "
        "(system and user text, byte for byte as sent, unwrapped) of the first item(s), after '--- system ---' / "
        "'--- user ---' lines; send nothing (no API key needed).")] = False,
    retry_unscored: RetryUnscored = J.retry_unscored,
    scope: Scope = J.scope, context_tokens: ContextTokens = None, context_share: ContextShare = J.context_share,
    tokenizer: TokenizerFile = None, chars_per_token: CharsPerToken = J.chars_per_token,
    max_tokens_per_item: MaxTokensPerItem = None, checker: Checker = J.checker,
    executor: ExecutorOpt = B.executor, batch_dir: BatchDir = None, vllm_model: VllmModel = None,
    vllm_command: VllmCommand = B.vllm_command, wait: Wait = B.wait, poll_seconds: PollSeconds = B.poll_seconds,
    vllm_arg: VllmArgs = None, vllm_env: VllmEnv = None,
) -> None:
    """Find the [bold]first wrong step[/bold] of each failed solution and classify its error.

    Every answer is checked against a JSON Schema built from the taxonomy; invalid answers are retried and finally recorded as [italic]unscored[/italic], never dropped. Answers are cached as they arrive, so a rerun (or a run after a crash) only sends what is missing. With --scope thinking or both, a reasoning model's thinking is judged in windows of sections that fit the judge's context, to the first wrong section; the estimated tokens and cost are printed before anything is sent.
    """
    if out is None and not dry_run:
        raise usage_error("--out", "say where the verdicts go")
    if executor == "vllm-batch" and not base_url:
        base_url = [VLLM_BATCH_URL]  # no server: the URL only names the judge in the cache
    settings = judge_settings(base_url, model, prompt, api_key_env=api_key_env, samples=samples,
                              temperature=temperature, max_tokens=max_tokens, seed=seed, concurrency=concurrency,
                              timeout=timeout, max_retries=max_retries, max_delay=max_delay,
                              invalid_retries=invalid_retries, response_format=response_format, transport=transport,
                              price_input=price_input, price_output=price_output, retry_unscored=retry_unscored,
                              scope=scope, context_tokens=context_tokens, context_share=context_share,
                              tokenizer=tokenizer, chars_per_token=chars_per_token,
                              max_tokens_per_item=max_tokens_per_item, checker=checker)
    job = build_job(settings, input=resolve_input(input), out=out, taxonomy=load_taxonomy(taxonomy), cache=cache,
                    input_format=input_format, limit=limit, include_correct=include_correct, require_key=not dry_run)
    job = with_executor(job, BatchSettings, executor=executor, batch_dir=batch_dir, vllm_model=vllm_model,
                        vllm_command=vllm_command, wait=wait, poll_seconds=poll_seconds,
                        vllm_args=tuple(vllm_arg or ()), vllm_env=tuple(vllm_env or ()))
    if not dry_run:
        check_job(job)  # outputs and cache, before the embedded judge starts or anything is sent
    warn_if_no_key(settings)
    if dry_run:
        render_dry_run(job, stdout)
        return
    with reaching_the_endpoint():
        run_judge_job(job, stderr)


@commands.command("judge-eval", epilog="Outputs in --out: metrics.json, summary.md, predictions.jsonl, verdicts.jsonl, "
                                  "steps.png (predicted vs. true step), calibration.png (reliability diagram). "
                                  + EPILOG)
def judge_eval(
    data: Annotated[str, typer.Argument(help="ProcessBench-format data (JSON array or JSONL of problem, steps, "
        "label = 0-based first wrong step or -1), any split (GSM8K, MATH, OlympiadBench, Omni-MATH), or the "
        "shipped processbench-gsm8k.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report files.")],
    base_url: BaseUrl = None, model: Model = None, api_key_env: ApiKeyEnv = J.api_key_env,
    samples: Samples = J.samples, temperature: Temperature = J.temperature, max_tokens: MaxTokens = J.max_tokens, seed: Seed = J.seed,
    taxonomy: TaxonomyFile = None, input_format: Format = "auto", limit: Limit = None,
    concurrency: Concurrency = None, timeout: Timeout = J.timeout, max_retries: MaxRetries = J.max_retries,
    max_delay: MaxDelay = J.max_delay, invalid_retries: InvalidRetries = J.invalid_retries, response_format: ResponseFormatOpt = J.response_format,
    transport: Transport = J.transport, cache: CacheFile = None, prompt: PromptFiles = None,
    escalate_below: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Escalation: the first "
        "--model judges every item, the others only items where it is unscored, its confidence is below this, "
        "or its samples disagree. The spend of each tier is reported.")] = None,
    bootstrap: Annotated[int, typer.Option(min=100, help="Bootstrap resamples for the 95% intervals.")] = 2000,
    retry_unscored: RetryUnscored = J.retry_unscored, checker: Checker = J.checker,
) -> None:
    """Score judges against [bold]human first-error labels[/bold] (ProcessBench's metrics).

    Accuracy on the samples with an error, on those without, and their harmonic mean (F1), each with a 95% bootstrap interval; where the judges point (too early / too late, by how many steps); unscored counts; with several judges, a side-by-side table, Cohen's kappa between judges and the ensemble's score; calibration of the stated confidence (reliability table, ECE, accuracy and coverage at thresholds).
    """
    settings = judge_settings(base_url, model, prompt, api_key_env=api_key_env, samples=samples,
                              temperature=temperature, max_tokens=max_tokens, seed=seed, concurrency=concurrency,
                              timeout=timeout, max_retries=max_retries, max_delay=max_delay,
                              invalid_retries=invalid_retries, response_format=response_format, transport=transport,
                              retry_unscored=retry_unscored, checker=checker)
    job = build_job(settings, input=resolve_input(data), out=None, taxonomy=load_taxonomy(taxonomy), cache=cache,
                    input_format=input_format, limit=limit)
    warn_if_no_key(settings)
    with reaching_the_endpoint():
        evaluation, metrics = run_judge_eval(EvalJob(job, out, escalate_below, bootstrap, seed), stderr)
    sys.stdout.write(to_markdown(evaluation))
    sys.stdout.write("\n" + checker_markdown(checker_from_json(metrics["checker"])))  # the step checker, same items
    stderr.print(f"wrote {out}/metrics.json, summary.md, predictions.jsonl, verdicts.jsonl, steps.png, "
                 "calibration.png")
