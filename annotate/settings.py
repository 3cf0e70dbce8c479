"""The Argilla dataset that annotators check verdicts in, derived from the taxonomy.

Everything here is pure: what the fields, questions, metadata, guidelines and suggestions of a
verdict's record are. ``quantmedic.annotate.push`` turns these into Argilla objects.
"""

from __future__ import annotations

import html

from quantmedic.taxonomy.model import NO_ERROR, Taxonomy
from quantmedic.taxonomy.records import Verdict

LAYER_METADATA = ("decided_by", "conflict", "checked_step")
"""What decided the verdict (judge, checker, rules), whether the LLM judge conflicts with the step checker
(yes / no), and the checker's checked step (none: the checker found no false claim or did not run)."""
METADATA = ("model", "quantization", "subject", "level", "judge", "judge_category", "stratum", *LAYER_METADATA)
WEIGHT = "sampling_weight"
NO_STEP = "none"
DEFAULT_MAX_STEPS = 40


def as_text(text: str) -> str:
    """Escape HTML so that a Markdown field shows it as text and never renders it.

    >>> as_text("<script>alert(1)</script> & x < y")
    '&lt;script&gt;alert(1)&lt;/script&gt; &amp; x &lt; y'
    """
    return html.escape(text, quote=False)


def as_markdown_math(text: str) -> str:
    r"""Escaped text with ``\( \)`` / ``\[ \]`` LaTeX delimiters turned into ``$`` / ``$$``, which
    Argilla's Markdown renders as math (Markdown would eat the backslashes otherwise).

    >>> as_markdown_math(r"so \(x < 2\) and \[y\]")
    'so $x &lt; 2$ and $$y$$'
    """
    text = as_text(text)
    for old, new in ((r"\(", "$"), (r"\)", "$"), (r"\[", "$$"), (r"\]", "$$")):
        text = text.replace(old, new)
    return text


def step_labels(max_steps: int) -> list[str]:
    """Labels of the first-wrong-step question: ``none`` then ``0`` … ``max_steps - 1``."""
    return [NO_STEP, *(str(i) for i in range(max_steps))]


def step_label(step: int | None) -> str | None:
    return None if step is None else NO_STEP if step == -1 else str(step)


def step_from_label(label: str | None) -> int | None:
    return None if label is None else -1 if label == NO_STEP else int(label)


def category_labels(taxonomy: Taxonomy) -> dict[str, str]:
    return {**{c.id: c.name for c in taxonomy.categories}, NO_ERROR: "No error"}


def subtype_labels(taxonomy: Taxonomy) -> dict[str, str]:
    return {**{s.id: s.name for c in taxonomy.categories for s in c.subtypes}, NO_ERROR: "No error"}


def guidelines(taxonomy: Taxonomy) -> str:
    """Annotator guidelines generated from the taxonomy's definitions and examples."""
    lines = [
        "# Checking an LLM judge's diagnosis", "",
        "Each record is a step-by-step solution that reached a wrong answer, and an LLM judge's diagnosis: "
        "the **first wrong step** and the **kind of error**, shown pre-filled as suggestions.", "",
        "1. Read the problem and the numbered steps (numbering starts at 0).",
        "2. Find the first step that is wrong yourself. A step that correctly follows from an earlier "
        "mistake is not the first error.",
        "3. Answer *Is the judge right?*: **yes** only if the judge found that step and named the right "
        "category.",
        "4. Confirm or correct the first wrong step (`none` if every step is right), the category and the "
        "subtype (the subtype must belong to the category).",
        "5. Add a comment when something is unclear. Submit; save a draft to come back later; discard "
        "records you cannot judge.", "",
        "Each diagnosis says which layer decided it: the LLM judge, the deterministic **step checker** (a "
        "computation a step claims, proven false, with no earlier step found wrong) or the degenerate-output "
        "rules. Records whose LLM judge **conflicts** with the step checker (metadata `conflict` = yes) need you "
        "first: the checker proved the step it names wrong, yet the judge puts the first error later or finds "
        "none. Check that step and the steps before it. To take them first, filter on the metadata `conflict` = "
        "yes, or sort by the record's insertion date (they were pushed first).", "",
        f"## Error taxonomy: {taxonomy.name}", ""]
    for category in taxonomy.categories:
        lines += [f"### {category.name} (`{category.id}`)", "", category.definition, "",
                  f"*Example:* {category.example}", ""]
        for subtype in category.subtypes:
            lines.append(f"- **{subtype.name}** (`{subtype.id}`): {subtype.definition} *Example:* {subtype.example}")
        lines.append("")
    return "\n".join(lines)


def record_fields(verdict: Verdict) -> dict[str, str]:
    """The record's field values: Markdown, with any HTML in the data escaped."""
    attempt = verdict.attempt
    steps = "\n\n".join(f"**Step {i}.** {as_markdown_math(step)}" for i, step in enumerate(attempt.steps))
    step = "no wrong step" if verdict.first_wrong_step == -1 else f"step {verdict.first_wrong_step}"
    section = thinking_claim(verdict)
    if section is not None:
        step = section if verdict.first_wrong_step is None else f"{section}; in the solution: {step}"
    confidence = "" if verdict.confidence is None else f", confidence {verdict.confidence:.2f}"
    claim = (f"**{as_text(verdict.judge_model)}** says: {step}, {verdict.category} / {verdict.subtype}"
             f"{confidence}.\n\n{as_text(verdict.explanation or '')}")
    claim += layer_note(verdict)
    quoted = wrong_section_text(verdict)
    if quoted:
        claim += f"\n\n**The section of the thinking it names:**\n\n{as_markdown_math(quoted)}"
    return {"problem": as_markdown_math(attempt.problem.text), "solution": steps,
            "reference_answer": as_text(attempt.problem.reference_answer or "(unknown)"),
            "judge_explanation": claim}


LAYERS = {"judge": "the LLM judge", "checker": "the step checker", "rules": "the degenerate-output rules"}


def layer_note(verdict: Verdict) -> str:
    """What the annotator is told of the deciding layer and the step checker's checked error (Markdown).

    >>> from quantmedic.taxonomy.records import Attempt, Problem
    >>> a = Attempt(problem=Problem(text="x"), steps=("48 / 2 = 25",))
    >>> v = Verdict(attempt=a, status="ok", first_wrong_step=-1, judge_model="j", taxonomy="t@1",
    ...             checked_step=0, checked_claim="48 / 2 = 25 (true: 24)", conflict=True)
    >>> import textwrap
    >>> print(textwrap.fill(layer_note(v).strip(), 100))
    **Decided by:** the LLM judge. **Conflict:** the step checker proved step 0 wrong (`48 / 2 = 25
    (true: 24)`), but the judge puts the first error later or finds none: check step 0 and the steps
    before it first.
    """
    note = f"\n\n**Decided by:** {LAYERS.get(verdict.decided_by, verdict.decided_by)}."
    if verdict.checked_step is None:
        return note
    claim = f" (`{as_text(verdict.checked_claim)}`)" if verdict.checked_claim else ""
    if verdict.conflict:
        return (note + f" **Conflict:** the step checker proved step {verdict.checked_step} wrong{claim}, but the "
                f"judge puts the first error later or finds none: check step {verdict.checked_step} and the steps "
                "before it first.")
    return note + f" The step checker found a false claim in step {verdict.checked_step}{claim}."


SECTION_QUOTE_CHARS = 3000
"""At most this much of the thinking section a verdict names is quoted in the annotator's record."""


def thinking_claim(verdict: Verdict) -> str | None:
    """What the judge said of a reasoning model's thinking, in words (None: the thinking was not judged).

    A thinking verdict's record shows the solution's steps as any other; the first wrong step question is
    about the solution, and the section the judge named is quoted in the judge's claim.
    """
    section = verdict.first_wrong_section
    if section is None or verdict.attempt.thinking is None:
        return None
    total = len(verdict.attempt.thinking.sections)
    return "no wrong section in the thinking" if section == -1 else f"section {section} of {total} of the thinking"


def wrong_section_text(verdict: Verdict) -> str | None:
    """The text of the thinking section the verdict names (cut to :data:`SECTION_QUOTE_CHARS`), if any."""
    thinking, section = verdict.attempt.thinking, verdict.first_wrong_section
    if thinking is None or section is None or not 0 <= section < len(thinking.sections):
        return None
    text = thinking.section_text(section)
    return text if len(text) <= SECTION_QUOTE_CHARS else text[:SECTION_QUOTE_CHARS] + " […]"


def quantization_label(verdict: Verdict) -> str:
    q = verdict.attempt.quantization
    if q is None:
        return "none"
    return "-".join(str(part) for part in (q.method, f"w{q.bits}" if q.bits else None,
                                           f"g{q.group_size}" if q.group_size else None) if part)


def record_metadata(verdict: Verdict, weight: float = 1.0, stratum: str | None = None) -> dict:
    problem = verdict.attempt.problem
    return {"model": verdict.attempt.model, "quantization": quantization_label(verdict),
            "subject": problem.subject or problem.source or "unknown",
            "level": "unknown" if problem.level is None else str(problem.level), "judge": verdict.judge_model,
            "judge_category": verdict.category or "unscored", "stratum": stratum or "all", WEIGHT: weight,
            "decided_by": verdict.decided_by, "conflict": "yes" if verdict.conflict else "no",
            "checked_step": step_label(verdict.checked_step) or NO_STEP}


def record_suggestions(verdict: Verdict) -> dict[str, str]:
    """The judge's answers, pre-filled for the annotator (question name → value)."""
    return {"first_wrong_step": step_label(verdict.first_wrong_step), "category": verdict.category,
            "subtype": verdict.subtype}
