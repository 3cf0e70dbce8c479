"""Correct continuations from the first wrong step, for step-level preference pairs.

For each diagnosed failure, the model is given the problem (the generation prompt) and the failed
solution's steps *before* the first wrong step, and samples how it would go on from there. Every
continuation is written as an Attempt whose first steps are exactly that prefix, graded with
math-verify. Fed to ``quantmedic medicine build --step-level`` as ``--attempts``, a correct one is a
chosen side that shares the rejected side's prefix and differs from the wrong step on: a
``resample`` when the model is the quantized model itself, ``full-precision`` when it is the
unquantized one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from quantmedic.judge.answers import extract_final_answer
from quantmedic.judge.segment import split_steps
from quantmedic.judge.step_format import render_prompt
from quantmedic.medicine.diagnoses import Diagnosis, resolve
from quantmedic.medicine.pairs import step_text
from quantmedic.pipelines.evaluation.grading import grade_attempts
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.records import Attempt, Review, Sampling, Verdict

from .engines import cut_at_eos, eos_ids, sample_seed
from .generation_config import SamplingSettings
from .loading import load_for_generation

CONTINUATION_OFFSET = 1000
"""Sample indices of continuations start here, apart from the generation's own samples."""


class ContinuationSettings(SamplingSettings):
    """How continuations are sampled (always sampled: the point is a different way on)."""

    n: int = Field(4, ge=1, description="Continuations per failure.")
    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    batch_size: int = Field(8, ge=1)


def prefix_text(attempt: Attempt, k: int) -> str:
    """The solution so far, in the generation format, ready for step ``k + 1``.

    >>> from quantmedic.taxonomy.records import Problem
    >>> prefix_text(Attempt(problem=Problem(text="q"), steps=("a = 1", "b = 3")), 1)
    'Step 1: a = 1\\n\\nStep 2:'
    """
    done = step_text(attempt.steps[:k])
    return (done + "\n\n" if done else "") + f"Step {k + 1}:"


def continue_failures(model: str | Path, diagnoses: Sequence[Diagnosis],
                      settings: ContinuationSettings = ContinuationSettings(), *,
                      device: str | None = None) -> list[Attempt]:
    """``settings.n`` sampled continuations per diagnosis (ungraded), each an Attempt sharing the failure's prefix."""
    import torch

    s = settings
    n, temperature, top_p, max_tokens, seed, batch_size = s.n, s.temperature, s.top_p, s.max_tokens, s.seed, s.batch_size
    loaded = load_for_generation(model, device=device)
    tokenizer, lm = loaded.tokenizer, loaded.model
    requests = [(d, i) for d in diagnoses for i in range(n)]
    made: list[Attempt] = []
    eos = eos_ids(lm, tokenizer)
    for start in range(0, len(requests), batch_size):
        batch = requests[start:start + batch_size]
        prompts = [render_prompt(tokenizer, d.attempt.problem) + prefix_text(d.attempt, d.first_wrong_step)
                   for d, _ in batch]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)
        torch.manual_seed(sample_seed(seed, batch[0][0].attempt.id, batch[0][1]))
        with torch.inference_mode():
            output = lm.generate(**encoded, max_new_tokens=max_tokens, do_sample=True, temperature=temperature,
                                 top_p=top_p, pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos))
        for (d, i), tokens in zip(batch, output[:, encoded["input_ids"].shape[1]:].tolist()):
            kept, stopped = cut_at_eos(tokens, eos)
            text = tokenizer.decode(kept, skip_special_tokens=True)
            rest = split_steps(f"Step {d.first_wrong_step + 1}:{text}") or [f"Step {d.first_wrong_step + 1}:"]
            steps = tuple(d.attempt.steps[:d.first_wrong_step]) + tuple(rest)
            made.append(Attempt(
                problem=d.attempt.problem, steps=steps, final_answer=extract_final_answer(text),
                model=loaded.name, quantization=loaded.quantization, finish_reason="stop" if stopped else "length",
                completion_tokens=len(kept) + stopped, source="continuation",
                sampling=Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                  seed=sample_seed(seed, d.attempt.id, i), sample_index=CONTINUATION_OFFSET + i,
                                  extra={"continues": d.attempt.id, "verdict": d.verdict.id,
                                         "prefix_steps": d.first_wrong_step})))
    return made


@dataclass(frozen=True)
class ContinuationSummary:
    failures: int
    continuations: int
    correct: int
    failures_covered: int


def continue_into(model: str | Path, verdicts: Sequence[Path], out: Path, settings: ContinuationSettings, *,
                  reviews: Path | None = None, limit: int | None = None,
                  device: str | None = None) -> ContinuationSummary:
    """Continue the usable diagnoses of ``verdicts`` (humans' first wrong step with ``reviews``), grade the
    continuations and write them to ``out`` (which must not exist: continuations are never appended to)."""
    if out.exists():
        raise InputError(out, "exists; continuations are not appended to or replaced: choose another --out",
                         field="--out")
    diagnoses, _ = resolve([v for p in verdicts for v in read_records(p, Verdict)],
                           read_records(reviews, Review) if reviews else None)
    diagnoses = diagnoses[:limit] if limit else diagnoses
    if not diagnoses:
        raise InputError(verdicts[0], "no usable diagnosis to continue from (unscored, unreviewed or no wrong step)")
    graded = grade_attempts(continue_failures(model, diagnoses, settings, device=device))
    write_records(out, graded)
    covered = {a.sampling.extra["continues"] for a in graded if a.correct}
    return ContinuationSummary(len(diagnoses), len(graded), sum(a.correct is True for a in graded), len(covered))
