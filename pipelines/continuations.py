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
from pathlib import Path

from quantmedic.judge.answers import extract_final_answer
from quantmedic.judge.segment import split_steps
from quantmedic.medicine.diagnoses import Diagnosis
from quantmedic.medicine.pairs import step_text
from quantmedic.taxonomy.records import Attempt, Sampling

from .generation import cut_at_eos, eos_ids, sample_seed
from .prompting import render_prompt

CONTINUATION_OFFSET = 1000
"""Sample indices of continuations start here, apart from the generation's own samples."""


def prefix_text(attempt: Attempt, k: int) -> str:
    """The solution so far, in the generation format, ready for step ``k + 1``.

    >>> from quantmedic.taxonomy.records import Problem
    >>> prefix_text(Attempt(problem=Problem(text="q"), steps=("a = 1", "b = 3")), 1)
    'Step 1: a = 1\\n\\nStep 2:'
    """
    done = step_text(attempt.steps[:k])
    return (done + "\n\n" if done else "") + f"Step {k + 1}:"


def continue_failures(model: str | Path, diagnoses: Sequence[Diagnosis], *, n: int = 4, temperature: float = 0.8,
                      top_p: float = 0.95, max_tokens: int = 512, seed: int = 0, batch_size: int = 8,
                      device: str | None = None) -> list[Attempt]:
    """``n`` sampled continuations per diagnosis (ungraded), each an Attempt sharing the failure's prefix."""
    import torch

    from .quantize import load_for_generation

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
