"""Annotation and the deciding layers: conflicts between the LLM judge and the step checker go to the
annotators first, every record shows which layer decided it (and the checker's checked step and claim), and
``annotate report`` gives the diagnostic accuracy per layer. Verdicts and reviews are built by hand with the
new fields; one push goes to the real local Argilla server.
"""

import json
from types import SimpleNamespace

import pytest

from quantmedic.annotate.push import PushSettings, plan_push, settings_conflicts, to_record
from quantmedic.annotate.report import diagnostic_report, layer_of, report_to_markdown
from quantmedic.annotate.sampling import CONFLICT, STRATIFY, _drawn, stratified_sample
from quantmedic.annotate.settings import LAYER_METADATA, METADATA, WEIGHT, record_fields, record_metadata
from quantmedic.taxonomy.jsonl import write_records
from quantmedic.taxonomy.records import Attempt, JudgeClaim, Problem, Review, Verdict

from .support import argilla_server as rest
from .test_cli_judge import cli

SUBTYPES = {"execution": "computational_error", "method": "procedural_error"}


def verdict(i: int, category: str = "execution", layer: str = "judge", conflict: bool = False) -> Verdict:
    attempt = Attempt(problem=Problem(text=f"Half of {2 * i + 48} apples?"), correct=False, model="q",
                      steps=(f"Step 1: {2 * i + 48} / 2 = {i + 25}", f"Step 2: The answer is {i + 25}."))
    checked = layer == "checker" or conflict
    return Verdict(attempt=attempt, status="ok", first_wrong_step=0 if layer == "checker" else (-1 if conflict else 1),
                   category=category if not conflict else "none", subtype=SUBTYPES[category] if not conflict else "none",
                   judge_model="checker+j" if layer == "checker" else "j", taxonomy="t@1", decided_by=layer,
                   checked_step=0 if checked else None,
                   checked_claim=f"{2 * i + 48} / 2 = {i + 25} (true: {i + 24})" if checked else None,
                   conflict=conflict)


def test_conflicts_go_first_and_all_of_them_under_a_sample():
    verdicts = ([verdict(i) for i in range(30)] + [verdict(100 + i, "method") for i in range(10)]
                + [verdict(200 + i, conflict=True) for i in range(3)])
    everything = stratified_sample(verdicts, None)
    assert [s.verdict.conflict for s in everything] == [True] * 3 + [False] * 40  # first, the rest in input order
    assert [s.verdict.id for s in everything[3:]] == [v.id for v in verdicts[:40]]
    sample = stratified_sample(verdicts, 10, "category", seed=3)
    assert len(sample) == 10 and [s.verdict.id for s in sample[:3]] == [v.id for v in verdicts[40:]]
    assert {(s.stratum, s.weight) for s in sample[:3]} == {(CONFLICT, 1.0)}
    # the other 7 are drawn from the 40 others as before: weights add up to their population
    assert not any(s.verdict.conflict for s in sample[3:]) and sum(s.weight for s in sample[3:]) == 40
    # without conflicts the draw is the one it always was
    plain = verdicts[:40]
    assert ([s.verdict.id for s in stratified_sample(plain, 10, seed=3)]
            == [s.verdict.id for s in _drawn(plain, 10, STRATIFY["category"], 3)])
    # more conflicts than the sample: all of them still go (they count toward it, the others get no draw)
    many = stratified_sample(verdicts, 2, seed=0)
    assert [s.verdict.conflict for s in many] == [True] * 3


def test_the_plan_puts_conflicts_first_and_does_not_count_them_as_unrepresented_strata():
    verdicts = [verdict(i) for i in range(8)] + [verdict(300, "method", conflict=True)]
    plan = plan_push(verdicts, PushSettings(sample=4))
    assert plan.sampled[0].verdict.conflict and plan.unrepresented == 0
    assert len(plan.sampled) == 4


def test_the_record_shows_the_deciding_layer_and_the_checked_claim():
    checker, conflict, judge = verdict(1, layer="checker"), verdict(2, conflict=True), verdict(3)
    text = record_fields(checker)["judge_explanation"]
    assert "**Decided by:** the step checker." in text and "false claim in step 0 (`50 / 2 = 26 (true: 25)`)" in text
    text = record_fields(conflict)["judge_explanation"]
    assert "**Conflict:** the step checker proved step 0 wrong (`52 / 2 = 27 (true: 26)`)" in text
    assert "check step 0 and the steps before it first" in text
    assert record_fields(judge)["judge_explanation"].endswith("**Decided by:** the LLM judge.")
    meta = {v.id: record_metadata(v) for v in (checker, conflict, judge)}
    assert [(m["decided_by"], m["conflict"], m["checked_step"]) for m in meta.values()] == [
        ("checker", "no", "0"), ("judge", "yes", "0"), ("judge", "no", "none")]
    # a verdict written before the layers existed reads with the defaults
    old = json.loads(judge.model_dump_json(exclude={"decided_by", "checked_step", "checked_claim", "conflict"}))
    assert record_metadata(Verdict.model_validate(old))["decided_by"] == "judge"
    rules = Verdict.model_validate({**old, "judge_model": "rules", "id": ""})
    assert record_metadata(rules)["decided_by"] == "rules"


def shape(metadata):
    """Stand-in dataset settings (what settings_conflicts compares), with these metadata names."""
    named = lambda name, **more: SimpleNamespace(name=name, **more)  # noqa: E731
    return SimpleNamespace(fields=[named("problem")], questions=[named("category", labels=["a", "b"])],
                           metadata=[named(m) for m in metadata], distribution=SimpleNamespace(min_submitted=1))


def test_a_dataset_made_before_the_layer_metadata_still_takes_pushes():
    wanted = shape([*METADATA, WEIGHT])
    old = shape([m for m in (*METADATA, WEIGHT) if m not in LAYER_METADATA])
    assert settings_conflicts(old, wanted) == [] and settings_conflicts(wanted, wanted) == []
    partial = shape([m for m in (*METADATA, WEIGHT) if m != "decided_by"])  # some layer metadata: not the old layout
    assert [p for p in settings_conflicts(partial, wanted) if p.startswith("metadata")]
    sampled = stratified_sample([verdict(1, layer="checker")], None)[0]
    names = [m.name for m in old.metadata]
    assert set(to_record(sampled, names).metadata) == set(names)  # only what the old dataset knows
    assert {"decided_by", "conflict", "checked_step"} <= set(to_record(sampled).metadata)


def review(verdict_id, step, category, *, judge_model="j", judge_step=1, annotator="ann", attached=None):
    return Review(verdict_id=verdict_id, annotator=annotator, first_wrong_step=step, category=category,
                  judge=JudgeClaim(model=judge_model, first_wrong_step=judge_step, category="execution"),
                  verdict=attached)


def test_annotate_report_gives_the_accuracy_by_deciding_layer_by_hand():
    reviews = [review("c1", 0, "execution", judge_model="checker+j", judge_step=0),
               review("c2", 0, "execution", judge_model="checker", judge_step=0),
               review("c3", 1, "execution", judge_model="checker+j", judge_step=0),  # the human disagrees
               review("j1", 1, "execution"), review("j2", 0, "execution"), review("j3", 0, "method"),
               review("j4", 1, "execution"), review("r1", 2, "execution", judge_model="rules", judge_step=2)]
    report = diagnostic_report(reviews)
    layers = {k: (r.n, r.value) for k, r in report.by_layer.items()}
    assert layers == {"checker": (3, pytest.approx(2 / 3)), "judge": (4, pytest.approx(0.5)), "rules": (1, 1.0)}
    assert report.checked == {}  # no verdict known: no conflicts table
    text = report_to_markdown(report)
    assert "## By deciding layer" in text and "| checker | 66.7%" in text and "| judge | 50.0%" in text
    assert "checked error" not in text


def test_with_the_verdicts_the_report_tells_how_conflicts_were_settled():
    conflicts = [verdict(i, conflict=True) for i in range(3)]  # the LLM says no wrong step, the checker step 0
    checker = verdict(10, layer="checker")
    reviews = [review(conflicts[0].id, 0, "execution", judge_step=-1),  # the human sides with the checker
               review(conflicts[1].id, 0, "execution", judge_step=-1),
               review(conflicts[2].id, -1, "none", judge_step=-1, attached=conflicts[2]),  # with the LLM
               review(checker.id, 0, "execution", judge_model="checker+j", judge_step=0)]
    reviews[2] = reviews[2].model_copy(update={"judge": JudgeClaim(model="j", first_wrong_step=-1, category="none")})
    report = diagnostic_report(reviews, [conflicts[0], conflicts[1], checker])
    settled = report.checked["conflict"]
    assert (settled["accepted"].n, settled["accepted"].value) == (3, pytest.approx(1 / 3))
    assert settled["checked step confirmed"].value == pytest.approx(2 / 3)
    assert report.checked["no conflict"]["checked step confirmed"].value == 1.0
    assert layer_of(reviews[3]) == "checker" and layer_of(reviews[0], conflicts[0]) == "judge"
    text = report_to_markdown(report)
    assert "| conflict | 33.3% [" in text and "| no conflict | 100.0% [" in text


def test_annotate_report_reads_reviews_written_before_the_layers(tmp_path):
    old = json.loads(review("v1", 1, "execution", attached=verdict(1)).model_dump_json())
    for key in ("decided_by", "checked_step", "checked_claim", "conflict"):
        old["verdict"].pop(key)
    path = tmp_path / "reviews.jsonl"
    path.write_text(json.dumps(old) + "\n")
    out = tmp_path / "report"
    result = cli("annotate", "report", path, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "## By deciding layer" in result.stdout and "| judge | 100.0%" in result.stdout
    assert json.loads((out / "report.json").read_text())["by_layer"]["judge"]["n"] == 1


@pytest.mark.slow
def test_one_push_sends_conflicts_first_with_the_layer_metadata(argilla, tmp_path):
    verdicts = [verdict(1), verdict(2, layer="checker"), verdict(3, "method"), verdict(4, conflict=True)]
    path = write_records(tmp_path / "verdicts.jsonl", verdicts)
    result = cli("annotate", "push", path, "--dataset", "layers", "--workspace", argilla.workspace,
                 env={"ARGILLA_API_URL": argilla.url, "ARGILLA_API_KEY": argilla.owner.api_key})
    assert result.returncode == 0, result.stderr
    import argilla as rg

    client = rg.Argilla(api_url=argilla.url, api_key=argilla.owner.api_key)
    dataset = client.datasets("layers", workspace=argilla.workspace)
    assert {"decided_by", "conflict", "checked_step"} <= {m.name for m in dataset.settings.metadata}
    records = {r.id: r for r in dataset.records(with_suggestions=True)}
    conflict, checker = records[verdicts[3].id], records[verdicts[1].id]
    assert (conflict.metadata["conflict"], conflict.metadata["decided_by"], conflict.metadata["checked_step"]) == (
        "yes", "judge", "0")
    assert checker.metadata["decided_by"] == "checker" and "the step checker" in checker.fields["judge_explanation"]
    assert {s.agent for s in checker.suggestions} == {"checker j"}  # Argilla refuses a '+' in an agent
    annotator = argilla.annotators[0]
    token = rest.token(argilla.url, annotator.username, annotator.password)
    # an annotator's default queue is shuffled per annotator by Argilla; sorted by insertion (the UI's "inserted
    # at" sort) the conflict comes first, and the conflict metadata filters them
    by_insertion = queue(argilla.url, token, str(dataset.id),
                         {"sort": [{"scope": {"entity": "record", "property": "inserted_at"}, "order": "asc"}]})
    assert by_insertion[0] == verdicts[3].id and sorted(by_insertion) == sorted(v.id for v in verdicts)
    only = queue(argilla.url, token, str(dataset.id), {"filters": {"and": [
        {"type": "terms", "scope": {"entity": "metadata", "metadata_property": "conflict"}, "values": ["yes"]}]}})
    assert only == [verdicts[3].id]


def queue(url: str, token: str, dataset_id: str, body: dict) -> list[str]:
    """The external ids of the records an annotator's search returns, in its order."""
    import httpx

    page = httpx.post(f"{url}/api/v1/me/datasets/{dataset_id}/records/search", json=body, params={"limit": 50},
                      headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert page.status_code == 200, page.text
    return [item["record"]["external_id"] for item in page.json()["items"]]
