"""The medicine: diagnoses (reviews win), contamination guard, targeted selection, pairs with lineage,
and the Hugging Face export reloaded with ``datasets``.

The verdicts are real quantmedic verdicts: real GSM8K model failures (the shipped solutions of
OpenAI's 6B model, graded by their authors) judged through the judge runner by the fault server's
fixed-opinion judges, so each verdict's category is known. The chosen side comes from the same
file's 175B solutions (unquantized, another model) and the GSM8K reference solutions.
"""

import json
from collections import Counter

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.medicine.contamination import problem_key
from quantmedic.medicine.diagnoses import resolve
from quantmedic.medicine.pairs import build_pairs, reference_steps, step_text
from quantmedic.medicine.selection import select
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.records import JudgeClaim, PreferencePair, Quantization, Review, Verdict

from .support.judging import judge_attempts
from .test_cli_judge import cli

KINDS = {"execution": "execution/computational_error", "method": "method/procedural_error",
         "reasoning": "reasoning/logical_reasoning_error"}
MIX = {"execution": 24, "method": 12, "reasoning": 4}  # 60% / 30% / 10% of 40 failures


@pytest.fixture(scope="module")
def solutions(gsm8k_solutions):
    attempts = load_attempts(gsm8k_solutions)
    small = [a for a in attempts if "6b" in a.model and a.correct is False]
    return attempts, small


@pytest.fixture(scope="module")
def verdicts(fault, solutions, tmp_path_factory):
    """40 failures of the 6B model judged by three fixed-opinion judges, in the proportions of MIX."""
    _, failures = solutions
    failures = [a for a in failures if len(a.steps) >= 3][:sum(MIX.values())]
    groups, start = [], 0
    for category, n in MIX.items():
        groups.append((f"say:1:0.9:{KINDS[category]}", failures[start:start + n]))
        start += n
    folder = tmp_path_factory.mktemp("medicine-verdicts")
    fault.script([])
    found = [v for model, attempts in groups
             for v in judge_attempts(fault.base_url, model, attempts, folder / f"{len(attempts)}.sqlite")]
    assert Counter(v.category for v in found) == Counter(MIX)
    return write_records(folder / "verdicts.jsonl", found)


def review(verdict, annotator, step, category, subtype, judge_correct):
    return Review(verdict_id=verdict.id, annotator=annotator, judge_correct=judge_correct, first_wrong_step=step,
                  category=category, subtype=subtype,
                  judge=JudgeClaim(model=verdict.judge_model, first_wrong_step=verdict.first_wrong_step,
                                   category=verdict.category, subtype=verdict.subtype))


# --- selection ---

def test_error_weighted_selection_follows_the_failure_mix_and_is_seeded(verdicts):
    diagnoses, skipped = resolve(read_records(verdicts, Verdict))
    assert len(diagnoses) == 40 and not skipped
    drawn = select(diagnoses, 20, "error-weighted", seed=3)
    assert Counter(d.category for d in drawn.chosen) == {"execution": 12, "method": 6, "reasoning": 2}
    assert drawn.available == MIX
    again = select(diagnoses, 20, "error-weighted", seed=3)
    other = select(diagnoses, 20, "error-weighted", seed=4)
    ids = lambda s: [d.verdict.id for d in s.chosen]
    assert ids(again) == ids(drawn) and set(ids(other)) != set(ids(drawn))


def test_stratified_gives_equal_shares_and_hands_on_what_a_small_category_cannot_use(verdicts):
    diagnoses, _ = resolve(read_records(verdicts, Verdict))
    assert Counter(d.category for d in select(diagnoses, 12, "stratified").chosen) == {
        "execution": 4, "method": 4, "reasoning": 4}
    # reasoning has only 4: its unused share goes to the others, the budget is still met
    assert Counter(d.category for d in select(diagnoses, 21, "stratified").chosen) == {
        "execution": 9, "method": 8, "reasoning": 4}
    uniform = select(diagnoses, 40, "uniform", seed=1).chosen
    assert Counter(d.category for d in uniform) == Counter(MIX)  # the whole pool, so the mix itself


def test_a_budget_past_the_pool_takes_everything_once_per_problem(solutions):
    _, failures = solutions
    a = failures[0]
    twin = a.model_copy(update={"id": "", "sampling": a.sampling.model_copy(update={"sample_index": 1})})
    vs = [Verdict(attempt=x, status="ok", first_wrong_step=0, category="execution", subtype="computational_error",
                  judge_model="j", taxonomy="t@1") for x in (a, twin)]
    diagnoses, _ = resolve(vs)
    assert len(select(diagnoses, 10).chosen) == 1
    assert len(select(diagnoses, 10, max_per_problem=2).chosen) == 2


# --- human reviews ---

def test_reviews_corrections_win_and_unreviewed_or_disputed_verdicts_are_left_out(verdicts):
    vs = read_records(verdicts, Verdict)[:5]
    reviews = [
        review(vs[0], "ann1", vs[0].first_wrong_step, vs[0].category, vs[0].subtype, True),   # accepted
        review(vs[1], "ann1", 2, "method", "formula_rule_error", False),                      # corrected
        review(vs[1], "ann2", 2, "method", "formula_rule_error", False),
        review(vs[2], "ann1", -1, "none", "none", False),                                      # no error
        review(vs[3], "ann1", 0, "conceptual", "contextual_oversight", False),                 # dispute
        review(vs[3], "ann2", 1, "execution", "computational_error", True),
    ]                                                                                          # vs[4]: unreviewed
    diagnoses, skipped = resolve(vs, reviews)
    by_id = {d.verdict.id: d for d in diagnoses}
    assert set(by_id) == {vs[0].id, vs[1].id}
    assert (by_id[vs[0].id].source, by_id[vs[0].id].category) == ("human-accepted", vs[0].category)
    corrected = by_id[vs[1].id]
    assert (corrected.source, corrected.first_wrong_step, corrected.category, corrected.subtype) == (
        "human-corrected", 2, "method", "formula_rule_error")
    assert corrected.review_ids == tuple(sorted(r.id for r in reviews[1:3]))
    assert skipped == {"reviewers found no wrong step": 1, "reviewers disagree": 1, "not reviewed": 1}


# --- pairs ---

def test_chosen_prefers_full_precision_then_resample_then_reference(solutions):
    attempts, failures = solutions
    fp_right = {a.problem.id for a in attempts if "175b" in a.model and a.correct}
    failure = next(a for a in failures if a.problem.id in fp_right)
    quantized = failure.model_copy(update={"id": "", "quantization": Quantization(method="gptq", bits=4,
                                                                                  group_size=128)})
    resample = quantized.model_copy(update={"id": "", "correct": True, "steps": ("Step 1: right",),
                                            "sampling": quantized.sampling.model_copy(update={"sample_index": 1})})
    verdict = Verdict(attempt=quantized, status="ok", first_wrong_step=1, category="method",
                      subtype="procedural_error", judge_model="j", taxonomy="t@1")
    diagnoses, _ = resolve([verdict])
    pool = attempts + [resample]
    (fp_pair,), _ = build_pairs(diagnoses, pool)
    (re_pair,), _ = build_pairs(diagnoses, pool, order=("resample", "full-precision"))
    (ref_pair,), _ = build_pairs(diagnoses, pool, order=("reference",))
    assert fp_pair.chosen_source == "full-precision" and "175b" in fp_pair.chosen_model
    assert re_pair.chosen_source == "resample" and re_pair.chosen_attempt_id == resample.id
    assert ref_pair.chosen_source == "reference" and ref_pair.chosen_attempt_id is None
    assert ref_pair.chosen[0].content == step_text(reference_steps(quantized.problem))
    assert "\\boxed{" + quantized.problem.reference_answer + "}" in ref_pair.chosen[0].content
    for pair in (fp_pair, re_pair, ref_pair):  # lineage
        assert (pair.verdict_id, pair.rejected_attempt_id, pair.category) == (verdict.id, quantized.id, "method")
        assert pair.rejected_quantization == "gptq-w4-g128" and pair.rejected[0].content == step_text(quantized.steps)
        assert pair.prompt[-1].role == "user" and quantized.problem.text in pair.prompt[-1].content
    assert build_pairs(diagnoses, [], order=("full-precision", "resample"))[1] == {"no correct solution to choose": 1}


def test_step_pairs_share_the_prefix_up_to_the_first_wrong_step(solutions):
    _, failures = solutions
    rejected = next(a for a in failures if len(a.steps) >= 3)
    right = rejected.model_copy(update={"id": "", "model": "full", "correct": True,
                                        "steps": rejected.steps[:2] + ("the right third step", "A: 7")})
    elsewhere = right.model_copy(update={"id": "", "model": "other", "steps": ("a different start",) + right.steps[1:]})
    verdict = Verdict(attempt=rejected, status="ok", first_wrong_step=2, category="execution",
                      subtype="computational_error", judge_model="j", taxonomy="t@1")
    diagnoses, _ = resolve([verdict])
    (pair,), notes = build_pairs(diagnoses, [elsewhere, right], step_level=True)
    assert pair.kind == "step" and pair.shared_prefix_steps == 2 and pair.chosen_model == "full" and not notes
    chosen, rejected_text = pair.chosen[0].content, pair.rejected[0].content
    prefix = step_text(rejected.steps[:2])
    assert chosen.startswith(prefix) and rejected_text.startswith(prefix)
    assert chosen[len(prefix):] != rejected_text[len(prefix):] and "the right third step" in chosen
    (fallback,), notes = build_pairs(diagnoses, [elsewhere], step_level=True)
    assert fallback.kind == "solution" and notes == {"step pair fell back to solution": 1}


# --- the build command and the export ---

def test_build_exports_a_dataset_that_reloads_and_feeds_trl_unchanged(verdicts, gsm8k_solutions, tmp_path):
    out = tmp_path / "medicine"
    result = cli("medicine", "build", "--verdicts", verdicts, "--attempts", gsm8k_solutions, "--budget", "20",
                 "--out", out, "--seed", "1")
    assert result.returncode == 0, result.stderr
    pairs = read_records(out / "pairs.jsonl", PreferencePair)
    assert len(pairs) == 20 and Counter(p.category for p in pairs) == {"execution": 12, "method": 6, "reasoning": 2}
    by_verdict = {v.id: v for v in read_records(verdicts, Verdict)}
    for pair in pairs:
        v = by_verdict[pair.verdict_id]
        assert (pair.rejected_attempt_id, pair.category, pair.first_wrong_step) == (v.attempt.id, v.category, 1)
    from datasets import load_dataset, load_from_disk

    from quantmedic.judge.step_format import step_messages

    for dataset in (load_dataset(str(out), split="train"), load_from_disk(str(out / "hf"))["train"]):
        assert dataset.num_rows == 20 and {"prompt", "chosen", "rejected", "verdict_id"} <= set(dataset.column_names)
        row = dataset[0]
        problem = by_verdict[pairs[0].verdict_id].attempt.problem
        assert row["prompt"] == step_messages(problem)  # the generation format
        assert row["chosen"] == [m.model_dump() for m in pairs[0].chosen]
        assert row["rejected"] == [m.model_dump() for m in pairs[0].rejected] and row["id"] == pairs[0].id
    from trl.data_utils import is_conversational

    assert is_conversational(load_dataset(str(out), split="train")[0])
    card = (out / "README.md").read_text()
    report = json.loads((out / "medicine.json").read_text())
    assert "license: mit" in card and "| execution | 12 | 60.0% |" in card and "| gsm8k | 20 | MIT |" in card
    assert report["selection"]["available"] == MIX and len(report["problem_keys"]) == 20
    assert "no evaluation split was given" in result.stderr

    # a rerun is a no-op; another build never silently replaces this one
    before = (out / "pairs.jsonl").read_bytes()
    again = cli("medicine", "build", "-v", verdicts, "-a", gsm8k_solutions, "--budget", "20", "-o", out, "--seed", "1")
    assert again.returncode == 0 and "unchanged" in again.stderr
    other = cli("medicine", "build", "-v", verdicts, "-a", gsm8k_solutions, "--budget", "10", "-o", out)
    assert other.returncode == 2 and "--overwrite" in other.stderr
    assert (out / "pairs.jsonl").read_bytes() == before
    replaced = cli("medicine", "build", "-v", verdicts, "-a", gsm8k_solutions, "--budget", "10", "-o", out,
                   "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert load_dataset(str(out), split="train").num_rows == 10  # no stale cache of the folder's first build


def test_contamination_guard_keeps_evaluation_problems_out_unless_allowed(verdicts, gsm8k_solutions, tmp_path):
    verdict_list = read_records(verdicts, Verdict)
    held_out = [v.attempt.problem for v in verdict_list[:10]]  # these problems will be evaluated on
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("".join(json.dumps({"question": p.text, "answer": f"#### {p.reference_answer}"}) + "\n"
                                 for p in held_out))
    out = tmp_path / "guarded"
    result = cli("medicine", "build", "-v", verdicts, "-a", gsm8k_solutions, "--budget", "40", "-o", out,
                 "--eval-split", eval_file)
    assert result.returncode == 0, result.stderr
    pairs = read_records(out / "pairs.jsonl", PreferencePair)
    held_keys = {problem_key(p) for p in held_out}
    assert len(pairs) == 30 and not {problem_key(p.prompt[-1].content.split("Problem: ", 1)[1]) for p in pairs} & held_keys
    report = json.loads((out / "medicine.json").read_text())
    assert report["contamination"]["overlapping_failures"] == 10 and "10 failures on 10" in result.stderr
    allowed = cli("medicine", "build", "-v", verdicts, "-a", gsm8k_solutions, "--budget", "40", "-o",
                  tmp_path / "allowed", "--eval-split", eval_file, "--allow-eval-overlap")
    assert allowed.returncode == 0 and "KEPT" in allowed.stderr
    assert len(read_records(tmp_path / "allowed" / "pairs.jsonl", PreferencePair)) == 40


def test_bad_input_and_missing_hub_token_are_one_line_errors(verdicts, gsm8k_solutions, tmp_path, monkeypatch):
    broken = tmp_path / "v.jsonl"
    broken.write_text(verdicts.read_text().splitlines()[0] + "\n{\"status\": \"ok\"}\n")
    result = cli("medicine", "build", "-v", broken, "-a", gsm8k_solutions, "-o", tmp_path / "m")
    assert result.returncode == 1 and f"{broken}:2" in result.stderr and "Traceback" not in result.stderr
    env = {"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf-home")}
    pushed = cli("medicine", "build", "-v", verdicts, "-a", gsm8k_solutions, "-o", tmp_path / "p",
                 "--push-to-hub", "me/medicine", env=env)
    assert pushed.returncode == 2 and "HF_TOKEN" in pushed.stderr and not (tmp_path / "p").exists()
    unusable = cli("medicine", "build", "-v", verdicts, "-a", gsm8k_solutions, "-o", tmp_path / "n",
                   "--chosen", "resample")
    assert unusable.returncode == 1 and "no correct solution to choose: 40" in unusable.stderr
