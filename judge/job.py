"""The batch judging job behind ``quantmedic judge``: read attempts, judge them resumably, write
verdicts atomically, and report progress and totals.

A verdict already in the output is never replaced by a worse one: when this run's verdict on an
item is *unscored* (its requests failed, or were refused) and the file holds an ``ok`` verdict with
the same id, the ``ok`` one is kept (:func:`~quantmedic.judge.verdict_file.fold`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn, \
    TimeRemainingColumn
from rich.table import Table
from rich.markup import escape
from rich.text import Text

from quantmedic.judge.adapters import iter_attempts, load_attempts
from quantmedic.judge.backend import DEFAULT_TRANSPORT, ChatBackend, Endpoint, response_format_for
from quantmedic.judge.cache import ResponseCache
from quantmedic.judge.checker_tier import CheckerMode, asked, checked_error, with_note
from quantmedic.judge.embedded import EmbeddedJudgeUnavailable, check_installed, embedded_judge
from quantmedic.judge.prompt import DEFAULT_PROMPT, SystemPrompt, build_messages, system_message
from quantmedic.judge.retry import RetryPolicy
from quantmedic.judge.degenerate import detect_degenerate
from quantmedic.judge.runner import JudgeConfig, JudgeRun, JudgeSpec, RunStats
from quantmedic.judge.scan import ThinkingPlanner, ThinkingSettings, estimate
from quantmedic.judge.verdict_file import Folded, VerdictLog, check_verdicts_file, done_ids, fold
from quantmedic.judge.batch_backend import BatchBackend
from quantmedic.judge.batch_job import run_batched
from quantmedic.judge.batch_store import BatchExecutor, BatchStore
from quantmedic.judge.schema import judge_output_schema
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.locks import exclusive_output
from quantmedic.taxonomy.model import Taxonomy
from quantmedic.taxonomy.records import Attempt, Verdict


@dataclass(frozen=True)
class JudgeJob:
    """One ``quantmedic judge`` invocation, as plain settings."""

    input: Path
    out: Path | None
    taxonomy: Taxonomy
    endpoints: tuple[Endpoint, ...]  # empty: start the embedded judge
    input_format: str = "auto"
    samples: int = 1
    temperature: float = 0.0
    max_tokens: int = 512
    seed: int | None = 0
    concurrency: int = 16
    timeout: float = 120.0
    policy: RetryPolicy = RetryPolicy()
    invalid_retries: int = 2
    transport: str = DEFAULT_TRANSPORT
    cache: Path | None = None
    limit: int | None = None
    include_correct: bool = False
    price_input: float | None = None
    price_output: float | None = None
    embedded_prompt: SystemPrompt = DEFAULT_PROMPT
    retry_unscored: bool = False
    thinking: ThinkingSettings = ThinkingSettings()
    embedded_context: int = 4096
    executor: BatchExecutor | None = None
    """None: online requests; else the batch executor that answers them (see :mod:`.batch_job`)."""
    batch_dir: Path | None = None
    """The batch run's state folder; default ``<out>.batch`` beside the output."""
    checker: CheckerMode = "off"
    """The step checker before the judges (see :mod:`.checker_tier`)."""


def iter_selected(attempts: Iterable[Attempt], include_correct: bool, limit: int | None, skipped: Counter,
                  done: frozenset[str] | set[str] = frozenset()) -> Iterator[Attempt]:
    """Failed (or ungraded) attempts unless ``include_correct``, deduplicated by id, first ``limit``, less
    those in ``done`` (already judged); why the others were left out is counted in ``skipped``. A
    :class:`~quantmedic.judge.adapters.DoneAttempt` (what ``iter_attempts`` gives for an id in ``done``) is
    counted, never yielded."""
    seen: set[str] = set()
    for attempt in attempts:
        if attempt.id in seen:
            skipped["duplicate"] += 1
        elif attempt.correct is True and not include_correct:
            skipped["correct"] += 1
        elif limit is not None and len(seen) >= limit:
            skipped["over --limit"] += 1
        else:
            seen.add(attempt.id)
            if attempt.id in done:
                skipped["already judged (ok, same settings)"] += 1
            else:
                yield attempt


def select_attempts(attempts: Iterable[Attempt], include_correct: bool, limit: int | None) -> tuple[list[Attempt], dict]:
    """:func:`iter_selected` as a list, with the counts of what was left out."""
    skipped: Counter = Counter()
    chosen = list(iter_selected(attempts, include_correct, limit, skipped))
    return chosen, dict(skipped)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} items/s" if speed else "- items/s", style="progress.data.speed")


def _progress(console: Console, description: str = "judging") -> Progress:
    return Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                    _RateColumn(), TimeRemainingColumn(), TextColumn("retries {task.fields[retries]}"),
                    TextColumn("unscored {task.fields[unscored]}"), console=console, transient=False)


def summary_table(by_category: Counter, stats: RunStats, job: JudgeJob) -> Table:
    """The closing table: this run's items by category (``unscored`` too), then the run's counters."""
    table = Table(title="Judging summary", show_header=True)
    table.add_column("")
    table.add_column("count", justify="right")
    for category, count in sorted(by_category.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        table.add_row(str(category), str(count))
    table.add_section()
    table.add_row("verdicts", str(sum(by_category.values())))
    table.add_row("requests sent / from cache", f"{stats.requests_sent} / {stats.cache_hits}")
    table.add_row("transport retries / invalid answers", f"{stats.transport_retries} / {stats.invalid_answers}")
    table.add_row("tokens in / out (sent)", f"{stats.usage_sent.prompt_tokens} / {stats.usage_sent.completion_tokens}")
    table.add_row("tokens in / out (cached)",
                  f"{stats.usage_cached.prompt_tokens} / {stats.usage_cached.completion_tokens}")
    if job.thinking.scope != "solution":
        table.add_row("windows of thinking judged", str(stats.windows))
        table.add_row("judged on the solution (no thinking)", str(stats.no_thinking))
        table.add_row("stopped at --max-tokens-per-item", str(stats.over_cap))
    if job.checker != "off":
        _layer_rows(table, stats, bool(job.endpoints))
    cost = run_cost(stats, job)
    if cost is not None:
        discount = job.executor.discount if job.executor else 1.0
        label = "cost of this run (USD)" if discount == 1.0 else \
            f"cost of this run (USD, {job.executor.name} at {discount:.0%} of the online price)"
        table.add_row(label, f"{cost:.4f}")
    return table


def _layer_rows(table: Table, stats: RunStats, named_judge: bool) -> None:
    """Which layer decided this run's verdicts (the step checker, an LLM judge, the rules) and what is left."""
    table.add_section()
    table.add_row("attempts with a checked error (step checker)", str(stats.checked_errors))
    for layer, label in (("checker", "decided by the step checker"), ("judge", "decided by the LLM judge"),
                         ("rules", "decided by the degenerate-output rules")):
        table.add_row(label, str(stats.decided.get(layer, 0)))
    table.add_row("conflicts (the judge's first error after the checked one)", str(stats.conflicts))
    table.add_row("unscored" if named_judge else "left for a real judge (unscored)",
                  str(stats.unscored))


def run_cost(stats: RunStats, job: JudgeJob) -> float | None:
    """USD spent on sent tokens, with prices per million tokens (online prices: a batch executor's discount is
    applied); None without prices."""
    if job.price_input is None and job.price_output is None:
        return None
    discount = job.executor.discount if job.executor else 1.0
    return discount * (stats.usage_sent.prompt_tokens * (job.price_input or 0)
                       + stats.usage_sent.completion_tokens * (job.price_output or 0)) / 1e6


def dry_run(job: JudgeJob, console: Console) -> int:
    """Write the response format and, for the selected items, each judge's messages exactly as they are
    sent (no wrapping, markup or highlighting): each message's text follows its ``--- role ---`` line
    and ends with one added newline. Sends nothing."""
    attempts, _ = select_attempts(load_attempts(job.input, job.input_format), job.include_correct, job.limit or 1)
    schema = judge_output_schema(job.taxonomy)
    mode = job.endpoints[0].response_format if job.endpoints else "json_object"  # the embedded llama.cpp
    prompts = dict.fromkeys(e.prompt for e in job.endpoints) or {job.embedded_prompt: None}
    out = console.file
    out.write(json.dumps({"response_format": response_format_for(mode, schema)}, indent=2) + "\n")
    planner = ThinkingPlanner(judge_config(job, job.endpoints), answer_tokens=job.max_tokens)
    if job.thinking.scope != "solution":  # the windows of a thinking are asked with their own schema
        out.write(json.dumps({"response_format (windows of thinking)": response_format_for(mode, planner.schema)},
                             indent=2) + "\n")
    for attempt in attempts:
        if planner.judges_thinking(attempt):
            _dry_window(planner, attempt, out)
            if job.thinking.scope == "thinking":
                continue
        found = checked_error(attempt) if job.checker != "off" else None
        shown, note = asked(attempt, found, job.checker) if found else (attempt, "")
        out.write(f"=== attempt {attempt.id} ({len(attempt.steps)} steps) ===\n")
        if found:
            out.write(f"(step checker, {job.checker}: step {found.step} claims {found.claim}"
                      + ("; the checker decides, nothing is sent)\n" if shown is None else ")\n"))
        for prompt in prompts if shown is not None else ():
            for message in with_note(build_messages(job.taxonomy, schema, shown,
                                                    system=system_message(job.taxonomy, schema, prompt)), note):
                named = f" (prompt {prompt.name})" if len(prompts) > 1 and message["role"] == "system" else ""
                out.write(f"--- {message['role']}{named} ---\n{message['content']}\n")
    out.flush()
    return 0


def _dry_window(planner: ThinkingPlanner, attempt: Attempt, out) -> None:
    """The first window's messages of ``attempt``'s thinking, as :func:`dry_run` writes messages."""
    try:
        plan = planner.plan(attempt)
    except ValueError as error:  # no room for the thinking in this context
        out.write(f"=== attempt {attempt.id}: {error} ===\n")
        return
    first = plan[0]
    out.write(f"=== attempt {attempt.id} (thinking: {len(attempt.thinking.sections)} sections in {len(plan)} "
              f"windows; window 1: sections {first.window.first} to {first.window.last}, {first.prompt_tokens} "
              "prompt tokens) ===\n")
    for message in first.messages:
        out.write(f"--- {message['role']} ---\n{message['content']}\n")


def judge_config(job: JudgeJob, endpoints: tuple[Endpoint, ...]) -> JudgeConfig:
    """The judging configuration of ``job`` with these endpoints, one judge each."""
    specs = tuple(JudgeSpec(e, samples=job.samples, temperature=job.temperature, max_tokens=job.max_tokens,
                            seed=job.seed) for e in endpoints)
    return JudgeConfig(specs, job.taxonomy, max_invalid_retries=job.invalid_retries, thinking=job.thinking,
                       checker=job.checker)


def open_endpoints(job: JudgeJob, stack: ExitStack, console: Console) -> tuple[Endpoint, ...]:
    """The job's endpoints, starting the embedded judge (stopped when ``stack`` closes) if none is given."""
    if job.endpoints:
        return job.endpoints
    try:
        gguf = check_installed()
    except EmbeddedJudgeUnavailable as error:  # not installed (a server that fails to start is an error)
        if job.checker != "gate":
            raise
        console.print(f"[yellow]warning:[/yellow] {escape(str(error))}. The step checker judges alone: it decides the "
                      "failures whose first step it proves wrong; the others are left unscored for a real judge.",
                      highlight=False, soft_wrap=True)
        return ()
    console.print("starting the embedded judge (llama.cpp + SmolLM2-135M-Instruct, a weak judge: "
                  "use --base-url/--model for real diagnoses)")
    endpoint = stack.enter_context(embedded_judge(gguf, n_ctx=job.embedded_context))
    console.print(f"embedded judge serving at {endpoint.base_url}", highlight=False)
    return (dataclasses.replace(endpoint, prompt=job.embedded_prompt),)


def _backends(job: JudgeJob, endpoints: tuple[Endpoint, ...]) -> dict[str, ChatBackend]:
    return {e.cache_identity: ChatBackend(e, timeout=job.timeout, policy=job.policy, transport=job.transport)
            for e in endpoints}


async def judge_with_progress(job: JudgeJob, attempts: list[Attempt], endpoints: tuple[Endpoint, ...],
                              cache: ResponseCache, console: Console,
                              description: str = "judging") -> tuple[list[Verdict], RunStats]:
    """Run the judges of ``endpoints`` over ``attempts`` with a progress bar."""
    verdicts: list[Verdict] = []
    stats = await judge_streaming(job, attempts, len(attempts), endpoints, cache, console, verdicts.append,
                                  description)
    return verdicts, stats


async def judge_streaming(job: JudgeJob, attempts: Iterable[Attempt], total: int | None,
                          endpoints: tuple[Endpoint, ...], cache: ResponseCache, console: Console,
                          sink: Callable[[Verdict], None], description: str = "judging",
                          backends: dict | None = None) -> RunStats:
    """Run the judges of ``endpoints`` over ``attempts`` (``total`` of them, if known) with a progress bar,
    handing each verdict to ``sink`` as it comes, in order; at most a few windows of items are in memory."""
    backends = backends if backends is not None else _backends(job, endpoints)
    with _progress(console, description) as progress:
        task = progress.add_task(description, total=total, retries=0, unscored=0)

        def advance(_verdict: Verdict, stats: RunStats) -> None:
            progress.update(task, completed=stats.done, retries=stats.transport_retries + stats.invalid_answers,
                            unscored=stats.unscored)

        run = JudgeRun(judge_config(job, endpoints), cache, backends, concurrency=job.concurrency,
                       on_item_done=advance, retry_unscored=job.retry_unscored)
        run.stats.items = total or 0
        if job.thinking.scope != "solution" and isinstance(attempts, list):
            degenerate = {a.id for a in attempts if detect_degenerate(a) is not None}
            console.print(estimate(run, attempts, degenerate).line(job.price_input, job.price_output),
                          highlight=False, soft_wrap=True)
        try:
            async for verdict in run.stream(attempts, window=max(256, 8 * job.concurrency)):
                sink(verdict)
        except BaseException:
            progress.live.transient = True  # an aborted run's error is its last word, not a stale bar
            raise
        finally:
            for backend in backends.values():
                await backend.close()
    return run.stats


def run_judge_job(job: JudgeJob, console: Console) -> RunStats:
    """Judge, stream the verdicts to disk, fold them into ``job.out`` with the verdicts already there."""
    assert job.out is not None
    with exclusive_output(job.out, "verdicts file"):  # a second judge on the same --out stops at once
        return _judge_into(job, job.out, console)


MATERIALISE_BELOW = 64 * 2**20
"""An input smaller than this (bytes) is read whole first, for an exact progress total; a larger one streams."""


def _judge_into(job: JudgeJob, out: Path, console: Console) -> RunStats:
    check_verdicts_file(out)
    if (recovered := fold(out)).new:
        console.print(f"folded {recovered.new} verdicts that an interrupted run had written into {out}")
    with ExitStack() as stack:
        endpoints = open_endpoints(job, stack, console)
        cache = stack.enter_context(ResponseCache(job.cache))
        if job.executor is None:
            stats, folded = _judge_pass(job, out, console, endpoints, cache)
        else:
            store = stack.enter_context(BatchStore(job.batch_dir or out.with_name(f"{out.name}.batch")))
            stats, folded = run_batched(job.executor, store, console,
                                        lambda backends: _judge_pass(job, out, console, endpoints, cache, backends),
                                        lambda: {e.cache_identity: BatchBackend(e, store) for e in endpoints})
    if folded.kept:
        console.print(f"kept {folded.kept} earlier verdicts from {out}")
    if folded.held:
        console.print(f"kept {folded.held} earlier ok verdicts from {out} that this run could not score "
                      "(it got no valid answer for them)", highlight=False, soft_wrap=True)
    console.print(summary_table(folded.categories, stats, job))
    console.print(f"wrote {folded.kept + folded.new + folded.held} verdicts to {out}" if folded.new or folded.held
                  else f"{out} is up to date: nothing new to write")
    return stats


def _judge_pass(job: JudgeJob, out: Path, console: Console, endpoints: tuple[Endpoint, ...], cache: ResponseCache,
                backends: dict | None = None) -> tuple[RunStats, Folded]:
    """One pass over the input: every item not yet judged ok under these settings, verdicts streamed to the
    partial file and folded into ``out``."""
    skipped: Counter = Counter()
    done = done_ids(out, judge_config(job, endpoints).fingerprint())
    attempts: Iterable[Attempt] = iter_selected(iter_attempts(job.input, job.input_format, done),
                                                job.include_correct, job.limit, skipped, done)
    total = None
    if not job.input.is_file() or job.input.stat().st_size < MATERIALISE_BELOW:  # a missing one: its error
        attempts = list(attempts)
        total = len(attempts)
        _say_skipped(console, skipped, total)
    log = VerdictLog(out)
    try:
        stats = asyncio.run(judge_streaming(job, attempts, total, endpoints, cache, console, log.write,
                                            backends=backends))
    finally:
        log.close()
    if total is None:
        _say_skipped(console, skipped, stats.done)
    return stats, fold(out)


def _say_skipped(console: Console, skipped: Counter, chosen: int) -> None:
    if skipped:
        console.print("skipped: " + ", ".join(f"{n} {why}" for why, n in skipped.items()))
    if not chosen and not skipped.get("already judged (ok, same settings)"):
        console.print("[yellow]nothing to judge[/yellow] (every attempt is correct; use --include-correct)")
