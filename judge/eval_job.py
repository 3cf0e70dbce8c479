"""``quantmedic judge-eval``: score judges against human first-error labels (ProcessBench format)
and write ``metrics.json``, ``summary.md``, ``predictions.jsonl``, ``verdicts.jsonl`` and plots.

With several judges, every judge judges every item and the table compares them, unless
``escalate_below`` is set: then the first judge judges every item and the others only the items
where it is unsure (unscored, confidence below the threshold, or its samples disagree); the final
call on an escalated item is the majority of all the answers it got.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.cache import ResponseCache
from quantmedic.judge.checker_eval import evaluate_checker
from quantmedic.judge.checker_eval import to_json as checker_json
from quantmedic.judge.checker_eval import to_markdown as checker_markdown
from quantmedic.judge.meta_eval import (MetaEvaluation, Prediction, evaluate, per_judge_predictions, to_json,
                                        to_markdown, verdict_prediction)
from quantmedic.judge.runner import combine_answers
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import write_atomic, write_records
from quantmedic.taxonomy.records import Attempt, Verdict, content_id

from quantmedic.judge.job import JudgeJob, judge_config, judge_with_progress, open_endpoints, select_attempts
from quantmedic.judge.figures import reliability_plot, step_confusion_plot
from quantmedic.judge.preflight import check_job

METRICS_JSON, SUMMARY_MD, PREDICTIONS, VERDICTS = "metrics.json", "summary.md", "predictions.jsonl", "verdicts.jsonl"
STEPS_PNG, CALIBRATION_PNG = "steps.png", "calibration.png"
OUTPUTS = (METRICS_JSON, SUMMARY_MD, PREDICTIONS, VERDICTS, STEPS_PNG, CALIBRATION_PNG)


@dataclass(frozen=True)
class EvalJob:
    """One ``quantmedic judge-eval`` invocation."""

    judging: JudgeJob
    out_dir: Path
    escalate_below: float | None = None
    n_resamples: int = 2000
    seed: int = 0


def labelled_attempts(job: JudgeJob) -> list[Attempt]:
    """Every attempt of the data (correct ones included), each with its human label."""
    attempts = load_attempts(job.input, job.input_format)
    for attempt in attempts:
        if attempt.label is None:
            raise InputError(job.input, f"attempt {attempt.problem.source_id or attempt.id} has no human label; "
                                        "judge-eval needs ProcessBench-style data", field="label")
    chosen, _ = select_attempts(attempts, include_correct=True, limit=None)
    return chosen if job.limit is None else stratified_head(chosen, job.limit)


def stratified_head(attempts: list[Attempt], n: int) -> list[Attempt]:
    """The first items of each subset (with / without an error), ``n`` in all, in the data's proportion
    (at least one of each when both exist and ``n`` >= 2), kept in their original order."""
    errors = [a for a in attempts if a.label != -1]
    if n >= len(attempts) or not errors or len(errors) == len(attempts):
        return attempts[:n]
    n_error = min(len(errors), max(1, min(n - 1, round(n * len(errors) / len(attempts)))))
    keep = {a.id for a in errors[:n_error]} | {a.id for a in [a for a in attempts if a.label == -1][: n - n_error]}
    return [a for a in attempts if a.id in keep]


def needs_escalation(verdict: Verdict, threshold: float) -> bool:
    """Unsure: unscored, confidence below ``threshold``, or the first judge's samples disagree."""
    return (verdict.status != "ok" or verdict.confidence is None or verdict.confidence < threshold
            or (verdict.agreement is not None and verdict.agreement < 1.0))


async def _escalate(job: EvalJob, attempts, endpoints, cache, console) -> tuple[list[Verdict], dict]:
    judging = job.judging
    first, stats1 = await judge_with_progress(judging, attempts, endpoints[:1], cache, console,
                                              f"judging ({endpoints[0].model})")
    unsure = [i for i, v in enumerate(first) if needs_escalation(v, job.escalate_below)]
    console.print(f"escalating {len(unsure)} of {len(first)} items (confidence < {job.escalate_below}, "
                  "unscored, or samples disagree)")
    second, stats2 = await judge_with_progress(judging, [attempts[i] for i in unsure], endpoints[1:], cache, console,
                                               "judging (escalated)")
    full = judge_config(judging, endpoints)
    fingerprint = content_id("cfg", {"judges": full.fingerprint(), "escalate_below": job.escalate_below})
    taxonomy = f"{full.taxonomy.name}@{full.taxonomy.version}"
    verdicts = list(first)
    for i, later in zip(unsure, second):
        verdicts[i] = combine_answers(attempts[i], [*first[i].judges, *later.judges], judge_model=full.judge_model,
                                      taxonomy=taxonomy, config=fingerprint)
    tiers = [{"judges": [e.model for e in tier], "items": n, "requests_sent": s.requests_sent,
              "cache_hits": s.cache_hits, "prompt_tokens": (s.usage_sent + s.usage_cached).prompt_tokens,
              "completion_tokens": (s.usage_sent + s.usage_cached).completion_tokens}
             for tier, n, s in ((endpoints[:1], len(first), stats1), (endpoints[1:], len(unsure), stats2))]
    return verdicts, {"threshold": job.escalate_below, "escalated": len(unsure), "items": len(first),
                      "share_escalated": len(unsure) / len(first) if first else None, "tiers": tiers}


def prediction_rows(verdicts: list[Verdict]) -> list[dict]:
    """One row per item: its label, each judge's call and the final (ensemble) call."""
    rows = []
    for verdict in verdicts:
        final = verdict_prediction(verdict)
        rows.append({
            "item": verdict.attempt.problem.source_id or verdict.attempt.id, "attempt_id": verdict.attempt.id,
            "verdict_id": verdict.id, "label": verdict.attempt.label,
            "judges": {name: {"step": p.step, "category": p.category, "confidence": p.confidence}
                       for name, p in per_judge_predictions(verdict).items()},
            "final": {"step": final.step, "category": final.category, "confidence": final.confidence},
        })
    return rows


def write_outputs(job: EvalJob, verdicts: list[Verdict], evaluation: MetaEvaluation, escalation: dict | None) -> dict:
    out = job.out_dir
    out.mkdir(parents=True, exist_ok=True)
    checker = evaluate_checker([v.attempt for v in verdicts])  # the step checker on the same items
    metrics = {"data": str(job.judging.input), "n_items": len(verdicts), **to_json(evaluation),
               "escalation": escalation, "bootstrap_resamples": job.n_resamples, "seed": job.seed,
               "checker": checker_json(checker)}
    write_atomic(out / METRICS_JSON, [json.dumps(metrics, indent=2) + "\n"])
    summary = to_markdown(evaluation, f"Judge meta-evaluation on {job.judging.input.name}")
    summary += "\n" + checker_markdown(checker)
    if escalation:
        summary += (f"\n## Escalation\n\n{escalation['escalated']} of {escalation['items']} items went past the first "
                    f"judge (confidence < {escalation['threshold']}, unscored, or its samples disagreed).\n\n"
                    "| tier | judges | items | requests sent | tokens in / out |\n|---|---|---:|---:|---|\n")
        for n, tier in enumerate(escalation["tiers"], start=1):
            summary += (f"| {n} | {', '.join(tier['judges'])} | {tier['items']} | {tier['requests_sent']} | "
                        f"{tier['prompt_tokens']} / {tier['completion_tokens']} |\n")
    write_atomic(out / SUMMARY_MD, [summary])
    write_atomic(out / PREDICTIONS, (json.dumps(r) + "\n" for r in prediction_rows(verdicts)))
    write_records(out / VERDICTS, verdicts)
    labels = [v.attempt.label for v in verdicts]
    per_item = [per_judge_predictions(v) for v in verdicts]
    plotted = {s.name: [item.get(s.name, Prediction(None)) for item in per_item] for s in evaluation.judges}
    if evaluation.ensemble:
        plotted[evaluation.ensemble.name] = [verdict_prediction(v) for v in verdicts]
    step_confusion_plot(labels, plotted, out / STEPS_PNG)
    reliability_plot([*evaluation.judges, *([evaluation.ensemble] if evaluation.ensemble else [])],
                     out / CALIBRATION_PNG)
    return metrics


def run_judge_eval(job: EvalJob, console: Console) -> tuple[MetaEvaluation, dict]:
    """Judge the labelled data, score the judges and write the report files (the report folder and the
    cache are checked before anything is read, started or sent)."""
    check_job(job.judging, job.out_dir, OUTPUTS)
    if job.escalate_below is not None and len(job.judging.endpoints) < 2:
        raise InputError("--escalate-below", "needs at least two judges (--base-url and --model twice)")
    attempts = labelled_attempts(job.judging)
    with ExitStack() as stack:
        endpoints = open_endpoints(job.judging, stack, console)
        cache = stack.enter_context(ResponseCache(job.judging.cache))
        if job.escalate_below is None:
            verdicts, _ = asyncio.run(judge_with_progress(job.judging, attempts, endpoints, cache, console))
            escalation = None
        else:
            verdicts, escalation = asyncio.run(_escalate(job, attempts, endpoints, cache, console))
    checker = job.judging.checker
    evaluation = evaluate(verdicts, n_resamples=job.n_resamples, seed=job.seed,
                          final=f"checker {checker} + judge" if checker != "off" else None)
    metrics = write_outputs(job, verdicts, evaluation, escalation)
    return evaluation, metrics
