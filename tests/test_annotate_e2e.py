"""push → annotators answer over REST → pull → report, against the real local Argilla server.

Verdicts are real: real ProcessBench failures judged through quantmedic (by the fault server's
fixed-opinion judges, so the claims are known). Two annotator accounts submit, correct, save a
draft and discard, as people do in the UI; every number in the report is checked by hand.
"""

import json

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.metrics import wilson_interval
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.local_server import reserve_port
from quantmedic.taxonomy.records import Review

from .support import argilla_server as rest
from .support.judging import judge_attempts
from .test_cli_judge import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def verdicts_file(tmp_path_factory, fault, processbench):
    attempts = [a for a in load_attempts(processbench) if a.correct is False][:6]
    folder = tmp_path_factory.mktemp("verdicts")
    fault.script([])
    verdicts = judge_attempts(fault.base_url, "fault", attempts, folder / "c.sqlite")
    assert all(v.status == "ok" and v.first_wrong_step == 1 for v in verdicts)
    return write_records(folder / "verdicts.jsonl", verdicts)


def env(argilla, key=None):
    return {"ARGILLA_API_URL": argilla.url, "ARGILLA_API_KEY": key or argilla.owner.api_key}


def owner_dataset(argilla, name):
    import argilla as rg

    client = rg.Argilla(api_url=argilla.url, api_key=argilla.owner.api_key)
    return client.datasets(name, workspace=argilla.workspace)


AGREE = {"judge_correct": "yes", "first_wrong_step": "1", "category": "execution", "subtype": "computational_error"}


def test_push_annotate_pull_report(argilla, verdicts_file, tmp_path):
    result = cli("annotate", "push", verdicts_file, "--dataset", "e2e", "--workspace", argilla.workspace,
                 "--overlap", "2", env=env(argilla))
    assert result.returncode == 0, result.stderr
    assert "created dataset e2e" in result.stderr and "6 records pushed" in result.stderr
    again = cli("annotate", "push", verdicts_file, "--dataset", "e2e", "--workspace", argilla.workspace,
                "--overlap", "2", env=env(argilla))
    assert again.returncode == 0 and "updated dataset e2e" in again.stderr
    dataset = owner_dataset(argilla, "e2e")
    records = list(dataset.records(with_suggestions=True))
    verdicts = [json.loads(line) for line in verdicts_file.read_text().splitlines()]
    assert sorted(r.id for r in records) == sorted(v["id"] for v in verdicts)  # pushed twice, no duplicates
    first = next(r for r in records if r.id == verdicts[0]["id"])
    suggested = {s.question_name: (s.value, s.agent, s.score) for s in first.suggestions}
    assert suggested["first_wrong_step"] == ("1", "fault", 0.8) and suggested["category"][0] == "execution"
    assert "**Step 0.**" in first.fields["solution"] and first.metadata["sampling_weight"] == 1.0
    assert dataset.settings.distribution.min_submitted == 2
    assert "Conceptual error" in dataset.settings.guidelines

    ann1, ann2 = argilla.annotators
    t1, t2 = rest.token(argilla.url, ann1.username, ann1.password), rest.token(argilla.url, ann2.username, ann2.password)
    seen = {r["external_id"]: r["id"] for r in rest.annotator_records(argilla.url, t1, str(dataset.id))}
    rid = [seen[v["id"]] for v in verdicts]
    correct_step = {**AGREE, "judge_correct": "no", "first_wrong_step": "0"}
    correct_cat = {**AGREE, "judge_correct": "no", "category": "method", "subtype": "procedural_error"}
    for i in range(4):
        rest.submit_response(argilla.url, t1, rid[i], AGREE)
    rest.submit_response(argilla.url, t1, rid[4], {**correct_step, "comment": "step 0 already <b>wrong</b>"})
    rest.submit_response(argilla.url, t1, rid[5], {"judge_correct": "yes"}, status="draft")
    rest.submit_response(argilla.url, t2, rid[0], AGREE)
    rest.submit_response(argilla.url, t2, rid[1], AGREE)
    rest.submit_response(argilla.url, t2, rid[2], correct_cat)
    rest.submit_response(argilla.url, t2, rid[3], {}, status="discarded")

    reviews_path = tmp_path / "reviews.jsonl"
    result = cli("annotate", "pull", "--dataset", "e2e", "--workspace", argilla.workspace, "--verdicts",
                 verdicts_file, "--out", reviews_path, env=env(argilla))
    assert result.returncode == 0, result.stderr
    assert "8 submitted reviews" in result.stderr and "1 drafts and 1 discarded" in result.stderr
    reviews = read_records(reviews_path, Review)
    assert sorted((r.annotator, r.verdict_id) for r in reviews) == sorted(
        [(ann1.username, verdicts[i]["id"]) for i in range(5)] + [(ann2.username, verdicts[i]["id"]) for i in range(3)])
    corrected = next(r for r in reviews if r.verdict_id == verdicts[4]["id"])
    assert (corrected.first_wrong_step, corrected.judge_correct, corrected.accepts) == (0, False, False)
    assert corrected.comment == "step 0 already <b>wrong</b>" and corrected.judge.first_wrong_step == 1

    out = tmp_path / "report"
    result = cli("annotate", "report", reviews_path, "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    # per verdict: v0 1, v1 1, v2 1/2 (ann2 corrects the category), v3 1 (ann2 discarded), v4 0 -> 3.5 / 5
    acc = report["diagnostic_accuracy"]
    expected = wilson_interval(3.5, 5)
    assert (acc["n"], acc["value"]) == (5, pytest.approx(0.7))
    assert (acc["low"], acc["high"]) == (pytest.approx(expected.low), pytest.approx(expected.high))
    assert report["step_exact"]["value"] == pytest.approx(0.8)  # only v4's step was corrected
    assert report["confusion"] == {"execution": {"execution": 7, "method": 1}}
    assert report["agreement"]["items"] == 3 and report["agreement"]["annotators"] == 2
    for name in ("report.md", "accuracy_by_category.png", "category_confusion.png"):
        assert (out / name).stat().st_size > 0


def test_stratified_sample_stores_weights(argilla, verdicts_file):
    result = cli("annotate", "push", verdicts_file, "--dataset", "sampled", "--workspace", argilla.workspace,
                 "--sample", "4", "--stratify", "category", "--seed", "1", env=env(argilla))
    assert result.returncode == 0, result.stderr
    records = list(owner_dataset(argilla, "sampled").records)
    assert len(records) == 4 and {r.metadata["stratum"] for r in records} == {"execution"}
    assert [r.metadata["sampling_weight"] for r in records] == [1.5] * 4  # 6 verdicts / 4 drawn
    too_few = cli("annotate", "push", verdicts_file, "--dataset", "sampled-by-model", "--workspace",
                  argilla.workspace, "--sample", "1", "--stratify", "model", env=env(argilla))
    assert too_few.returncode == 0 and "strata got no draw" in too_few.stderr


def test_conflicting_settings_are_refused_before_writing(argilla, verdicts_file, tmp_path):
    assert cli("annotate", "push", verdicts_file, "--dataset", "conflict", "--workspace", argilla.workspace,
               "--max-steps", "10", env=env(argilla)).returncode == 0
    result = cli("annotate", "push", verdicts_file, "--dataset", "conflict", "--workspace", argilla.workspace,
                 "--max-steps", "20", env=env(argilla))
    assert result.returncode == 1 and "exists with other settings" in result.stderr
    assert "first_wrong_step" in result.stderr
    taxonomy = tmp_path / "tax.yaml"
    taxonomy.write_text(cli("taxonomy").stdout.replace("logical_reasoning_error", "logic_error"))
    result = cli("annotate", "push", verdicts_file, "--dataset", "conflict", "--workspace", argilla.workspace,
                 "--max-steps", "10", "--taxonomy", taxonomy, env=env(argilla))
    assert result.returncode == 1 and "subtype" in result.stderr
    assert len(list(owner_dataset(argilla, "conflict").records)) == 6


def test_errors_are_one_line_with_advice(argilla, verdicts_file, tmp_path):
    cases = [
        (env(argilla, key="not-a-key"), ["--workspace", argilla.workspace], "refused the API key"),
        ({"ARGILLA_API_URL": f"http://127.0.0.1:{reserve_port()}", "ARGILLA_API_KEY": "k"}, [],
         "cannot reach Argilla"),
        (env(argilla), ["--workspace", "nope"], 'workspace "nope" does not exist'),
    ]
    for environment, extra, message in cases:
        result = cli("annotate", "push", verdicts_file, "--dataset", "x", *extra, env=environment)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    result = cli("annotate", "pull", "--dataset", "missing", "--workspace", argilla.workspace, "--verdicts",
                 verdicts_file, "--out", tmp_path / "r.jsonl", env=env(argilla))
    assert result.returncode == 1 and 'no dataset "missing"' in result.stderr
