"""The medicine and the deciding layers: checker-decided diagnoses taken first where the budget must choose
(``prefer_checker``), conflicts between the LLM judge and the step checker never used without a human review,
and the layer of each pair's diagnosis recorded in medicine.json and the card.

Verdicts are built by hand with the new fields, so every count below is known.
"""

import json
from collections import Counter

from quantmedic.medicine.build import BuildSettings, MedicineInputs, build, fingerprint
from quantmedic.medicine.diagnoses import CONFLICT_SKIP, Diagnosis, resolve
from quantmedic.medicine.export import dataset_card
from quantmedic.medicine.selection import select
from quantmedic.taxonomy.jsonl import write_records
from quantmedic.taxonomy.records import Attempt, JudgeClaim, Problem, Quantization, Review, Verdict

from .test_cli_judge import cli

SUBTYPES = {"execution": "computational_error", "method": "procedural_error"}


def failure(i: int, problem: Problem | None = None) -> Attempt:
    problem = problem or Problem(text=f"Ann has {i} apples and buys 12 more. How many?", reference_answer=str(i + 12),
                                 reference_solution=f"{i}+12={i + 12}\n#### {i + 12}", source="gsm8k")
    return Attempt(problem=problem, steps=(f"Step 1: {i} + 12 = {i + 13}", f"Step 2: The answer is {i + 13}."),
                   correct=False, model="q", quantization=Quantization(method="gptq", bits=4), sampling={"sample_index": i})


def verdict(i: int, category: str = "execution", layer: str = "judge", conflict: bool = False,
            problem: Problem | None = None) -> Verdict:
    checked = layer == "checker" or conflict
    return Verdict(attempt=failure(i, problem), status="ok", first_wrong_step=0 if layer == "checker" else 1,
                   category=category, subtype=SUBTYPES[category], taxonomy="t@1",
                   judge_model="checker+j" if layer == "checker" else "j", decided_by=layer,
                   checked_step=0 if checked else None, checked_claim=f"{i} + 12 = {i + 13} (true: {i + 12})"
                   if checked else None, conflict=conflict)


def accepting(v: Verdict, annotator: str = "ann") -> Review:
    return Review(verdict_id=v.id, annotator=annotator, judge_correct=True, first_wrong_step=v.first_wrong_step,
                  category=v.category, subtype=v.subtype,
                  judge=JudgeClaim(model=v.judge_model, first_wrong_step=v.first_wrong_step, category=v.category,
                                   subtype=v.subtype))


def test_a_conflict_is_medicine_only_once_a_human_reviewed_it():
    plain, conflicting = verdict(1), verdict(2, conflict=True)
    kept, skipped = resolve([plain, conflicting])
    assert [d.verdict.id for d in kept] == [plain.id] and skipped == Counter({CONFLICT_SKIP: 1})
    kept, skipped = resolve([plain, conflicting], [accepting(conflicting)])
    assert [(d.verdict.id, d.source) for d in kept] == [(conflicting.id, "human-accepted")]
    assert skipped == Counter({"not reviewed": 1})
    corrected = Review(verdict_id=conflicting.id, annotator="ann", judge_correct=False, first_wrong_step=0,
                       category="execution", subtype="computational_error",
                       judge=JudgeClaim(model="j", first_wrong_step=1, category="execution"))
    kept, _ = resolve([conflicting], [corrected])
    assert [(d.first_wrong_step, d.source) for d in kept] == [(0, "human-corrected")]


def test_the_checker_decided_failures_are_drawn_first_within_the_category_share():
    verdicts = ([verdict(i) for i in range(12)] + [verdict(100 + i, layer="checker") for i in range(3)]
                + [verdict(200 + i, "method") for i in range(5)])
    checker_ids = {v.id for v in verdicts if v.decided_by == "checker"}
    diagnoses, _ = resolve(verdicts)
    random_draws = []
    for seed in range(20):
        preferred = select(diagnoses, 5, "error-weighted", seed=seed, prefer_checker=True)
        plain = select(diagnoses, 5, "error-weighted", seed=seed, prefer_checker=False)
        assert preferred.allocated == plain.allocated == {"execution": 4, "method": 1}  # the shares do not move
        assert checker_ids <= {d.verdict.id for d in preferred.chosen}
        random_draws.append(len(checker_ids & {d.verdict.id for d in plain.chosen}))
    assert min(random_draws) < 3  # teeth: without the preference the draw leaves checker-decided ones out


def test_without_checker_decisions_the_draw_is_the_one_it_always_was():
    diagnoses, _ = resolve([verdict(i, "execution" if i % 3 else "method") for i in range(30)])
    for strategy in ("error-weighted", "stratified", "uniform"):
        for seed in range(5):
            on = select(diagnoses, 7, strategy, seed=seed, prefer_checker=True)
            off = select(diagnoses, 7, strategy, seed=seed, prefer_checker=False)
            assert [d.verdict.id for d in on.chosen] == [d.verdict.id for d in off.chosen]


def test_uniform_and_max_per_problem_prefer_the_checker_too():
    shared = failure(50).problem
    twins = [verdict(50, problem=shared), verdict(51, layer="checker", problem=shared)]
    others = [verdict(i) for i in range(4)]
    diagnoses, _ = resolve(twins + others)
    for seed in range(10):
        kept = select(diagnoses, 10, "uniform", seed=seed, prefer_checker=True).chosen
        assert twins[1].id in {d.verdict.id for d in kept} and twins[0].id not in {d.verdict.id for d in kept}
        one = select(diagnoses, 1, "uniform", seed=seed, prefer_checker=True).chosen
        assert [d.verdict.id for d in one] == [twins[1].id]


def test_a_human_correction_of_a_checker_verdict_is_not_a_checker_decision():
    v = verdict(1, layer="checker")
    assert Diagnosis(v, 0, "execution", "computational_error", "human-accepted").checker_confirmed
    assert not Diagnosis(v, 1, "method", "procedural_error", "human-corrected").checker_confirmed


def test_the_build_records_the_layer_of_each_pair_and_keeps_old_fingerprints():
    verdicts = ([verdict(i) for i in range(6)] + [verdict(100 + i, layer="checker") for i in range(2)]
                + [verdict(300, conflict=True)])
    settings = BuildSettings(budget=4, chosen=("reference",))
    pairs, report = build(MedicineInputs(verdicts, []), settings)
    assert len(pairs) == 4 and report["skipped"] == {CONFLICT_SKIP: 1}
    assert report["decided_by"] == {"judge": 2, "checker": 2} and report["settings"]["prefer_checker"] is True
    by_verdict = {v.id: v for v in verdicts}
    assert report["checker_decided_pairs"] == sorted(p.id for p in pairs
                                                     if by_verdict[p.verdict_id].decided_by == "checker")
    card = dataset_card(pairs, report)
    assert "### Deciding layer" in card and "| step checker | 2 | 50.0% |" in card and "| LLM judge | 2 |" in card
    # the default is unsaid in the dump: builds and study stages made before prefer_checker keep their keys
    assert "prefer_checker" not in BuildSettings().model_dump(mode="json")
    assert BuildSettings(prefer_checker=False).model_dump(mode="json")["prefer_checker"] is False
    judge_only = MedicineInputs([verdict(i) for i in range(6)], [])
    assert fingerprint(judge_only, BuildSettings()) == fingerprint(judge_only, BuildSettings.model_validate({}))
    marked = MedicineInputs([verdict(i) for i in range(5)] + [verdict(5, layer="checker")], [])
    assert fingerprint(marked, settings) != fingerprint(judge_only, settings)
    _, off = build(MedicineInputs(verdicts, []), BuildSettings(budget=4, chosen=("reference",), prefer_checker=False))
    assert off["settings"]["prefer_checker"] is False and off["fingerprint"] != report["fingerprint"]


def test_the_cli_takes_the_flag_and_says_which_layers_decided(tmp_path):
    verdicts = [verdict(i) for i in range(4)] + [verdict(100, layer="checker"), verdict(200, conflict=True)]
    vfile = write_records(tmp_path / "verdicts.jsonl", verdicts)
    afile = write_records(tmp_path / "attempts.jsonl", [v.attempt for v in verdicts])
    out = tmp_path / "medicine"
    result = cli("medicine", "build", "-v", vfile, "-a", afile, "-o", out, "--budget", "5", "--chosen", "reference",
                 "--no-prefer-checker")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "medicine.json").read_text())
    assert report["settings"]["prefer_checker"] is False and report["skipped"] == {CONFLICT_SKIP: 1}
    assert report["decided_by"] == {"judge": 4, "checker": 1} and len(report["checker_decided_pairs"]) == 1
    assert "diagnoses decided by: judge 4, checker 1 (--no-prefer-checker)" in result.stderr
    assert "### Deciding layer" in (out / "README.md").read_text()
