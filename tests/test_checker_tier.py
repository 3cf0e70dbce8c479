"""``quantmedic judge --checker off|hint|gate``: the step checker before the LLM judge, end to end against the
fault server's fixed judges (``say:STEP:CONFIDENCE``), with the verdict's layer, checked error and conflict flag."""

import contextlib
import importlib.util
import io
import json
import sys

import pytest

from quantmedic.judge.checker_tier import CheckedError, checked_error, marked
from quantmedic.pipelines.cli import main
from quantmedic.taxonomy.jsonl import dump_line, read_records
from quantmedic.taxonomy.records import Attempt, Problem, Verdict

from .test_cli_judge import cli

PROBLEM = Problem(text="Ann buys 3 apples at $2 each and a $5 pie. What does she pay?", reference_answer="11")
FIRST = Attempt(problem=PROBLEM, steps=("3 * 4 = 13 dollars for the apples.", "So she pays 13."), correct=False)
LATER = Attempt(problem=PROBLEM, steps=("She buys 3 apples at $2 each.", "3 * 2 = 6 dollars for the apples.",
                                        "6 + 5 = 12 dollars in all."), correct=False)
CLEAN = Attempt(problem=PROBLEM, steps=("The apples cost 3 * 2 = 6 dollars.", "She pays 6 + 5 = 11."), correct=False)


@pytest.fixture
def attempts(tmp_path):
    path = tmp_path / "attempts.jsonl"
    path.write_text("".join(dump_line(a) for a in (FIRST, LATER, CLEAN)))
    return path


def judge(faults, tmp_path, attempts, model, *extra, out="v.jsonl"):
    result = cli("judge", attempts, "--base-url", faults.base_url, "-m", model, "--out", tmp_path / out,
                 "--cache", tmp_path / "c.sqlite", *extra)
    assert result.returncode == 0, result.stderr
    return {v.attempt.id: v for v in read_records(tmp_path / out, Verdict)}, result


def test_the_checked_errors_of_the_three_attempts():
    assert checked_error(FIRST).step == 0 and "3 * 4 = 13" in checked_error(FIRST).claim
    assert checked_error(LATER).step == 2 and checked_error(LATER).claim == "6 + 5 = 12 (true: 11)"
    assert checked_error(CLEAN) is None


def test_gate_decides_by_the_checker_when_the_judge_finds_nothing_earlier(faults, tmp_path, attempts):
    verdicts, result = judge(faults, tmp_path, attempts, "say:-1:0.9", "--checker", "gate")
    first, later, clean = verdicts[FIRST.id], verdicts[LATER.id], verdicts[CLEAN.id]
    assert (first.decided_by, first.judge_model, first.first_wrong_step) == ("checker", "checker", 0)
    assert (later.decided_by, later.judge_model, later.first_wrong_step) == ("checker", "checker+say:-1:0.9", 2)
    for v in (first, later):
        assert (v.category, v.subtype, v.confidence, v.conflict) == ("execution", "computational_error", 1.0, False)
        assert v.checked_step == v.first_wrong_step and v.checked_claim in v.explanation
    assert len(later.judges) == 1 and later.judges[0].first_wrong_step == -1  # the judge's answer is kept
    assert (clean.decided_by, clean.first_wrong_step, clean.checked_step) == ("judge", -1, None)
    assert len(faults.requests()) == 2  # the first-step error is decided without asking
    summary = " ".join(result.stderr.replace("│", " ").split())
    assert "decided by the step checker 2" in summary and "decided by the LLM judge 1" in summary


def test_gate_keeps_the_judges_earlier_error(faults, tmp_path, attempts):
    verdicts, _ = judge(faults, tmp_path, attempts, "say:0:0.9", "--checker", "gate")
    later = verdicts[LATER.id]
    assert (later.decided_by, later.first_wrong_step, later.checked_step, later.conflict) == ("judge", 0, 2, False)
    assert verdicts[FIRST.id].decided_by == "checker"


def test_hint_asks_the_judge_and_flags_a_verdict_past_the_checked_error(faults, tmp_path, attempts):
    verdicts, result = judge(faults, tmp_path, attempts, "say:-1:0.9", "--checker", "hint")
    assert all(v.decided_by == "judge" for v in verdicts.values())
    assert verdicts[FIRST.id].conflict and verdicts[LATER.id].conflict and not verdicts[CLEAN.id].conflict
    assert (verdicts[LATER.id].checked_step, verdicts[CLEAN.id].checked_step) == (2, None)
    assert len(faults.requests()) == 3
    assert "conflicts (the judge's first error after the checked one) 2" in " ".join(
        result.stderr.replace("│", " ").split())
    off, _ = judge(faults, tmp_path, attempts, "say:-1:0.9", out="off.jsonl")  # a named judge: auto is off
    assert all(v.checked_step is None and not v.conflict for v in off.values())
    assert off[CLEAN.id].config != verdicts[CLEAN.id].config  # the mode is part of the settings' fingerprint


def test_conflict_means_after_the_checked_error_or_none():
    found = CheckedError(2, checked_error(LATER).findings)
    ok = Verdict(attempt=LATER, status="ok", first_wrong_step=0, category="execution",
                 subtype="computational_error", judge_model="j", taxonomy="t@1")
    assert [marked(ok.model_copy(update={"first_wrong_step": s}), found).conflict for s in (0, 2, 3, -1)] == \
        [False, False, True, True]
    unscored = Verdict(attempt=LATER, status="unscored", judge_model="j", taxonomy="t@1")
    assert not marked(unscored, found).conflict


def test_dry_run_shows_what_each_mode_asks(faults, tmp_path, attempts):
    hint = cli("judge", attempts, "--base-url", faults.base_url, "-m", "x", "--dry-run", "--limit", "3",
               "--checker", "hint")
    assert hint.returncode == 0 and "claims `3 * 4 = 13`; exactly, it is 12" in hint.stdout
    gate = cli("judge", attempts, "--base-url", faults.base_url, "-m", "x", "--dry-run", "--limit", "3",
               "--checker", "gate")
    assert "the checker decides, nothing is sent" in gate.stdout
    assert "Solution steps (2 steps, numbered 0 to 1)" in gate.stdout  # LATER cut before its checked error
    assert "Only the steps before step 2 are shown" in gate.stdout
    assert faults.requests() == []


def test_modes_that_cannot_work_are_refused_with_one_line(faults, tmp_path, attempts):
    thinking = cli("judge", attempts, "--base-url", faults.base_url, "-m", "x", "--out", tmp_path / "v.jsonl",
                   "--checker", "hint", "--scope", "thinking")
    assert thinking.returncode == 2 and "needs --scope solution" in thinking.stderr
    taxonomy = tmp_path / "tax.yaml"
    taxonomy.write_text("name: tiny\nversion: 1\ncategories:\n  - id: slip\n    name: Slip\n    definition: A slip.\n"
                        "    example: 2 + 2 = 5.\n    subtypes:\n      - id: any_slip\n        name: Any slip\n"
                        "        definition: Any slip.\n        example: 2 + 2 = 5.\n")
    gate = cli("judge", attempts, "--base-url", faults.base_url, "-m", "x", "--out", tmp_path / "v.jsonl",
               "--checker", "gate", "--taxonomy", taxonomy)
    assert gate.returncode == 2 and "lacks" in gate.stderr and "Traceback" not in gate.stderr
    assert not (tmp_path / "v.jsonl").exists() and faults.requests() == []


def test_without_the_embedded_judge_the_checker_decides_alone(tmp_path, attempts, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else find_spec(name, *a))
    monkeypatch.setattr(sys, "argv", ["quantmedic", "judge", str(attempts), "--out", str(tmp_path / "v.jsonl"),
                                      "--cache", str(tmp_path / "c.sqlite")])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit:
        main()
    assert exit.value.code in (0, None), err.getvalue()
    verdicts = {v.attempt.id: v for v in read_records(tmp_path / "v.jsonl", Verdict)}
    assert verdicts[FIRST.id].decided_by == "checker" and verdicts[FIRST.id].status == "ok"
    assert verdicts[LATER.id].status == verdicts[CLEAN.id].status == "unscored"
    assert "left for a real judge" in verdicts[CLEAN.id].reason and "step 2" in verdicts[LATER.id].reason
    assert "llama-cpp-python is not installed" in err.getvalue()
    assert "left for a real judge (unscored) 2" in " ".join(err.getvalue().replace("│", " ").split())


def test_verdicts_written_before_the_layer_existed_still_read():
    old = json.loads(Verdict(attempt=FIRST, status="ok", first_wrong_step=0, category="degenerate", subtype="loop",
                             judge_model="rules", taxonomy="t@1").model_dump_json())
    for key in ("decided_by", "checked_step", "checked_claim", "conflict"):
        del old[key]
    assert Verdict.model_validate(old).decided_by == "rules"
    old["judge_model"] = "gpt"
    assert Verdict.model_validate(old).decided_by == "judge"
