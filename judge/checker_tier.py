"""The step checker as a tier of the judge (``quantmedic judge --checker off|hint|gate``).

Before an LLM judge sees a solution, :func:`~quantmedic.judge.checker.check_steps` evaluates its claimed
computations exactly. Its first step with a false claim is the *checked error*.

- ``hint``: the judge is asked as usual, and the checker's findings are added to its user message as facts to
  weigh. An attempt with no finding gets exactly the message (and cache key) of ``off``.
- ``gate``: the judge is asked only about the steps *before* the checked error ("is any of these wrong?").
  When none is, the verdict is the checked error itself: category ``execution``, subtype
  ``computational_error``, ``decided_by`` 'checker', ``judge_model`` 'checker+<judge>' (or 'checker' alone
  when the checked error is the first step and nothing is asked). When one is, the judge's verdict stands.
  An attempt with no finding goes to the judge as usual.

Every verdict of a checked attempt carries ``checked_step`` and ``checked_claim``; an LLM verdict that puts
the first error after the checked error, or finds none, carries ``conflict``. Only the solution's steps are
checked: scope ``solution``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from quantmedic.taxonomy.model import Taxonomy
from quantmedic.taxonomy.records import Attempt, Verdict

from .checker import Finding, check_steps
from .question import Question

if TYPE_CHECKING:
    from .runner import JudgeRun

CheckerMode = Literal["off", "hint", "gate"]
CATEGORY, SUBTYPE = "execution", "computational_error"
CHECKER = "checker"


@dataclass(frozen=True)
class CheckedError:
    """An attempt's checked error: its 0-based step and every false claim the checker found."""

    step: int
    findings: tuple[Finding, ...]

    @property
    def claim(self) -> str:
        """The first false claim of that step, e.g. '48 / 2 = 25 (true: 24)'."""
        first = self.findings[0]
        return f"{first.expression} {first.relation} {first.claimed} (true: {first.true})"


def checked_error(attempt: Attempt) -> CheckedError | None:
    """The checked error of ``attempt``'s solution, or None when every claim it could read holds."""
    result = check_steps(attempt.id, attempt.steps)
    if result.checked_error is None:
        return None
    return CheckedError(result.checked_error - 1, result.findings)


def can_gate(taxonomy: Taxonomy) -> bool:
    """Whether ``taxonomy`` has the category and subtype a checker verdict is recorded under."""
    return CATEGORY in taxonomy.category_ids and SUBTYPE in {s.id for s in taxonomy.category(CATEGORY).subtypes}


def hint_note(found: CheckedError) -> str:
    """The findings, as facts for the judge's user message."""
    lines = [f"- [Step {f.step - 1}] claims `{f.expression} {f.relation} {f.claimed}`; exactly, it is {f.true}."
             for f in found.findings]
    return ("\n\nA deterministic checker evaluated the computations these steps claim, exactly, and found these "
            "false:\n" + "\n".join(lines) + "\nWeigh them as facts: a step with a false computation is wrong, but an "
            "earlier step may already be wrong for another reason (a misread problem, a wrong plan).")


def gate_note(found: CheckedError) -> str:
    """What the judge is told when shown only the steps before the checked error."""
    first = found.findings[0]
    return (f"\n\nOnly the steps before step {found.step} are shown: a deterministic checker proved step "
            f"{found.step} wrong (it claims `{first.expression} {first.relation} {first.claimed}`; exactly, it is "
            f"{first.true}). Is any of the steps shown already wrong? If none is, answer first_wrong_step = -1 with "
            "the no-error category and subtype.")


def checker_verdict(run: JudgeRun, attempt: Attempt, found: CheckedError, judges: tuple = (),
                    judge_model: str = CHECKER) -> Verdict:
    """The checked error as the verdict: the checker decided."""
    explanation = f"Step {found.step} claims {found.claim} (the step checker's exact evaluation)."
    return Verdict(attempt=attempt, status="ok", first_wrong_step=found.step, category=CATEGORY, subtype=SUBTYPE,
                   explanation=explanation, confidence=1.0, judge_model=judge_model, judges=judges,
                   taxonomy=run.taxonomy_label, config=run.fingerprint, decided_by="checker",
                   checked_step=found.step, checked_claim=found.claim)


def marked(verdict: Verdict, found: CheckedError) -> Verdict:
    """A judge's verdict on a checked attempt, with the checked error and the conflict flag."""
    step = verdict.first_wrong_step
    conflict = verdict.status == "ok" and (step is None or step < 0 or step > found.step)
    return verdict.model_copy(update={"checked_step": found.step, "checked_claim": found.claim, "conflict": conflict})


def asked(attempt: Attempt, found: CheckedError, mode: CheckerMode) -> tuple[Attempt | None, str]:
    """What the judge is shown of a checked attempt in ``mode``: the attempt (in ``gate`` only the steps before
    the checked error; None when that leaves none and nothing is asked) and the note added to its user message."""
    if mode == "hint":
        return attempt, hint_note(found)
    if found.step == 0:
        return None, ""
    return attempt.model_copy(update={"steps": attempt.steps[:found.step]}), gate_note(found)


def with_note(messages: list[dict], note: str) -> list[dict]:
    """``messages`` with ``note`` added to the last (the user message)."""
    return [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + note}]


async def judge_checked(run: JudgeRun, attempt: Attempt, mode: CheckerMode) -> Verdict:
    """The verdict on ``attempt``'s solution with the checker in ``mode`` (see the module's docstring)."""
    found = checked_error(attempt)
    if found is None:
        return await run.judge_solution(attempt)
    run.stats.checked_errors += 1
    shown, note = asked(attempt, found, mode)
    if shown is None:
        return checker_verdict(run, attempt, found)
    question = run.solution_question(shown)
    question = Question({spec: with_note(m, note) for spec, m in question.messages.items()}, question.schema,
                        question.schema_sha, question.check)
    verdict = run.combine(attempt, await run.ask_all(question))
    if mode == "gate" and verdict.status == "ok" and verdict.first_wrong_step == -1:
        return checker_verdict(run, attempt, found, verdict.judges, f"{CHECKER}+{run.config.judge_model}")
    if mode == "gate" and verdict.status == "unscored":
        verdict = verdict.model_copy(update={"reason": f"the judge could not say whether a step before the checked "
                                                       f"error (step {found.step}) is wrong: {verdict.reason}"})
    return marked(verdict, found)
