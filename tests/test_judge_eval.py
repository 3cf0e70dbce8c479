"""``quantmedic judge-eval`` end to end on the shipped ProcessBench GSM8K split, with judges of
fixed opinions served by the fault-injecting server (``say:STEP:CONFIDENCE`` models), so that
every expected number follows from the human labels alone."""

import json

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.pipelines.data import shipped_path

from .test_cli_judge import cli

N = 40


def labelled(n=N):
    """The --limit slice: the first items with an error and the first without, in the data's proportion."""
    attempts = load_attempts(shipped_path("processbench-gsm8k"))
    share = sum(a.label != -1 for a in attempts) / len(attempts)
    n_error = round(n * share)
    errors = [a for a in attempts if a.label != -1][:n_error]
    correct = [a for a in attempts if a.label == -1][: n - n_error]
    keep = {a.id for a in errors + correct}
    return [(a.label, len(a.steps) - 1) for a in attempts if a.id in keep]


def test_two_judges_side_by_side_with_agreement_and_ensemble(faults, tmp_path):
    out = tmp_path / "eval"
    result = cli("judge-eval", "processbench-gsm8k", "--base-url", faults.base_url, "-m", "say:-1:0.9",
                 "-m", "say:1:0.6", "--limit", N, "--out", out, "--cache", tmp_path / "c.sqlite", "--bootstrap", 500)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    items = labelled()
    errors = [(label, last) for label, last in items if label >= 0]
    correct = [(label, last) for label, last in items if label == -1]
    assert metrics["n_items"] == N and len(errors) + len(correct) == N and errors and correct
    never = metrics["judges"]["say:-1:0.9"]  # says "no error" everywhere
    assert (never["error_accuracy"], never["correct_accuracy"], never["f1"]) == (0.0, 1.0, 0.0)
    assert never["localization"]["missed"] == len(errors)
    one = metrics["judges"]["say:1:0.6"]  # points at step 1 (or the last step when there is one step)
    expected = sum(label == min(1, last) for label, last in errors) / len(errors)
    assert one["error_accuracy"] == pytest.approx(expected) and one["correct_accuracy"] == 0.0
    assert one["localization"]["too_early"] == sum(min(1, last) < label for label, last in errors)
    assert one["error_accuracy_ci95"]["low"] <= expected <= one["error_accuracy_ci95"]["high"]
    # the ensemble ties 1 vote each way: the more confident judge (0.9, "no error") wins everywhere
    assert metrics["ensemble"]["correct_accuracy"] == 1.0 and metrics["ensemble"]["error_accuracy"] == 0.0
    (pair,) = metrics["agreement"]
    assert pair["n_items"] == N and pair["kappa_error"] == 0.0  # each judge constant: no agreement beyond chance
    assert one["calibration"]["ece"] == pytest.approx(abs(0.6 - expected * len(errors) / N))
    for name in ("summary.md", "predictions.jsonl", "verdicts.jsonl", "steps.png", "calibration.png"):
        assert (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [label for label, _ in items]
    assert rows[0]["judges"]["say:-1:0.9"]["step"] == -1 and rows[0]["item"] == "gsm8k-0"
    summary = (out / "summary.md").read_text()
    assert "| say:-1:0.9 | 40 | 0.0 [0.0, 0.0] | 100.0 [100.0, 100.0] |" in summary
    assert "| ensemble | 40 |" in summary and "say:-1:0.9 vs say:1:0.6" in summary
    assert "| ensemble | 40 |" in result.stdout


@pytest.mark.parametrize("threshold, escalated", [(0.7, N), (0.5, 0)])
def test_escalation_sends_the_second_judge_only_where_the_first_is_unsure(faults, tmp_path, threshold, escalated):
    out = tmp_path / "eval"
    result = cli("judge-eval", "processbench-gsm8k", "--base-url", faults.base_url, "-m", "say:1:0.6",
                 "-m", "say:-1:0.9", "--limit", N, "--out", out, "--cache", tmp_path / "c.sqlite",
                 "--escalate-below", threshold, "--bootstrap", 200)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    esc = metrics["escalation"]
    assert esc["escalated"] == escalated and esc["items"] == N
    assert [t["requests_sent"] for t in esc["tiers"]] == [N, escalated]
    assert len(faults.requests()) == N + escalated
    final_correct = metrics["ensemble"]["correct_accuracy"] if metrics["ensemble"] else None
    if escalated:  # every item escalated: the confident "no error" wins each tie
        assert final_correct == 1.0
    assert "Escalation" in (out / "summary.md").read_text()


def test_every_published_split_format_runs(faults, tmp_path):
    """ProcessBench's MATH, OlympiadBench and Omni-MATH splits have the GSM8K split's fields, with LaTeX."""
    rows = [{"id": f"{split}-{i}", "generator": "Qwen2.5-Math-7B-Instruct",
             "problem": f"Find $x$ if $\\frac{{x}}{{2}} = {i + 3}$.",
             "steps": ["We multiply both sides by $2$: $x = 2 \\cdot 3$.", "So $x = \\boxed{5}$."],
             "final_answer_correct": False, "label": 1}
            for split in ("math", "olympiadbench", "omnimath") for i in range(2)]
    for split in ("math", "olympiadbench", "omnimath"):
        path = tmp_path / f"{split}.json"
        path.write_text(json.dumps([r for r in rows if r["id"].startswith(split)], indent=2))
        out = tmp_path / split
        result = cli("judge-eval", path, "--base-url", faults.base_url, "-m", "fault", "--out", out,
                     "--cache", tmp_path / "c.sqlite", "--bootstrap", 100)
        assert result.returncode == 0, result.stderr
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["judges"]["fault"]["error_accuracy"] == 1.0 and metrics["n_items"] == 2
    jsonl = tmp_path / "hub-export.jsonl"  # datasets' to_json of the Hub copy: one object per line
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = cli("judge-eval", jsonl, "--base-url", faults.base_url, "-m", "fault", "--out", tmp_path / "hub",
                 "--cache", tmp_path / "c.sqlite", "--bootstrap", 100)
    assert result.returncode == 0, result.stderr


def test_unlabelled_data_is_refused_with_file_and_field(faults, tmp_path):
    result = cli("judge-eval", "gsm8k-solutions", "--base-url", faults.base_url, "-m", "fault",
                 "--out", tmp_path / "e")
    assert result.returncode == 1 and "label" in result.stderr and "no human label" in result.stderr
    assert not (tmp_path / "e").exists() and faults.requests() == []


def test_two_prompts_for_one_model_are_two_judges(faults, tmp_path):
    terse = tmp_path / "terse.txt"
    terse.write_text("Grade the steps. Taxonomy:\n{taxonomy}\nJSON Schema of your answer:\n{schema}\n")
    default_copy = tmp_path / "strict.txt"
    default_copy.write_text("You are a strict grader. No error means {none}.\n{taxonomy}\n{schema}")
    out = tmp_path / "eval"
    result = cli("judge-eval", "processbench-gsm8k", "--base-url", faults.base_url, "-m", "fault", "-m", "fault",
                 "--prompt", terse, "--prompt", default_copy, "--limit", 6, "--out", out,
                 "--cache", tmp_path / "c.sqlite", "--bootstrap", 100)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["judges"]) == ["fault+strict", "fault+terse"] and metrics["agreement"]
    assert metrics["judges"]["fault+terse"]["requests"] == 6 == metrics["judges"]["fault+strict"]["requests"]
    assert len(faults.requests()) == 12  # each prompt is its own request (and its own cache key)
    dry = cli("judge", "processbench-gsm8k", "--base-url", faults.base_url, "-m", "fault", "--prompt", terse,
              "--dry-run")
    assert dry.returncode == 0 and "Grade the steps. Taxonomy:" in dry.stdout and "computational_error" in dry.stdout
    bad = tmp_path / "bad.txt"
    bad.write_text("Grade the steps, answer in JSON.")
    refused = cli("judge", "processbench-gsm8k", "--base-url", faults.base_url, "-m", "fault", "--prompt", bad,
                  "--out", tmp_path / "v.jsonl")
    assert refused.returncode == 1 and "lacks {taxonomy} and {schema}" in refused.stderr
