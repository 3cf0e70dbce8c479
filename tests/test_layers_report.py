"""The study report split by deciding layer: the error mix of the verdicts the LLM judge, the step checker
and the degenerate-output rules decided, the human-verified diagnostic accuracy of each, and the medicine's
pairs by the layer that decided their diagnosis. The study folder is built by hand, so every count is known.
"""

import csv
import io
import json

from quantmedic.pipelines.evaluation.compare import write_comparison
from quantmedic.pipelines.study.report import write_report
from quantmedic.taxonomy.jsonl import write_records
from quantmedic.taxonomy.records import Attempt, JudgeClaim, Problem, Review, Verdict

from tests.test_compare import hand_built

SUBTYPES = {"execution": "computational_error", "method": "procedural_error", "degenerate": "repetition"}


def verdict(i: int, category: str = "execution", layer: str = "judge", conflict: bool = False) -> Verdict:
    attempt = Attempt(problem=Problem(text=f"Half of {2 * i + 48}?"), correct=False, model="q",
                      steps=(f"Step 1: {2 * i + 48} / 2 = {i + 25}", f"Step 2: The answer is {i + 25}."))
    return Verdict(attempt=attempt, status="ok", first_wrong_step=0 if layer == "checker" else 1, category=category,
                   subtype=SUBTYPES[category], taxonomy="t@1", decided_by=layer, conflict=conflict,
                   judge_model={"checker": "checker+j", "rules": "rules"}.get(layer, "j"),
                   checked_step=0 if layer == "checker" or conflict else None)


def review(v: Verdict, accepts: bool) -> Review:
    return Review(verdict_id=v.id, annotator="ann", first_wrong_step=v.first_wrong_step if accepts else 0,
                  category=v.category if accepts else "method",
                  judge=JudgeClaim(model="j", first_wrong_step=v.first_wrong_step, category=v.category))


def study(root, verdicts, reviews=None, medicine=None):
    stages = {"compare": None, "judge": verdicts, "review": reviews, "medicine": medicine}
    state = {}
    for kind, content in stages.items():
        folder = root / "stages" / f"{kind}-kv3" / "k1"
        if kind == "compare":
            write_comparison(*hand_built(), folder)
        elif content is None:
            continue
        elif kind == "medicine":
            (folder / "medicine").mkdir(parents=True)
            (folder / "medicine" / "medicine.json").write_text(json.dumps(content))
        else:
            folder.mkdir(parents=True)
            write_records(folder / ("verdicts.jsonl" if kind == "judge" else "reviews.jsonl"), content)
        state[f"{kind}:kv3"] = {"key": "k1", "status": "done", "folder": f"stages/{kind}-kv3/k1"}
    (root / "state.json").write_text(json.dumps(state))
    page = write_report(root)
    return page.parent


def table(out, name):
    return list(csv.reader(io.StringIO((out / "tables" / f"{name}.csv").read_text())))


def test_the_error_mix_accuracy_and_medicine_are_split_by_deciding_layer(tmp_path):
    verdicts = ([verdict(i) for i in range(4)] + [verdict(10 + i, "method", conflict=i == 0) for i in range(2)]
                + [verdict(20 + i, layer="checker") for i in range(3)] + [verdict(30, "degenerate", layer="rules")])
    reviewed = verdicts[:4] + verdicts[6:9]  # 4 judge-decided (2 accepted), 3 checker-decided (all accepted)
    reviews = [review(v, accepts=i % 2 == 0 or v.decided_by == "checker") for i, v in enumerate(reviewed)]
    medicine = {"problem_keys": [], "categories": {"execution": 5}, "chosen_sources": {"reference": 5},
                "decided_by": {"judge": 2, "checker": 3}}
    out = study(tmp_path / "s", verdicts, reviews, medicine)
    assert table(out, "categories_by_layer") == [
        ["model", "decided by", "diagnosed", "conflicts with the checker", "degenerate", "execution", "method"],
        ["kv3", "judge", "6", "1", "0", "4", "2"], ["kv3", "checker", "3", "0", "0", "3", "0"],
        ["kv3", "rules", "1", "0", "1", "0", "0"]]
    accuracy = table(out, "diagnostic_accuracy_by_layer")
    assert [row[:4] for row in accuracy[1:]] == [["kv3", "checker", "3", "100.0%"], ["kv3", "judge", "4", "50.0%"]]
    assert table(out, "medicine_layers")[1:] == [["kv3", "judge", "2"], ["kv3", "checker", "3"]]
    text = (out / "report.md").read_text()
    assert "kv3: 3 diagnoses decided by the step checker, 6 by the LLM judge, 1 conflicts between them." in text
    assert "data-table='categories_by_layer'" in (out / "index.html").read_text()


def test_a_study_judged_before_the_layers_reports_as_before_plus_the_judge_row(tmp_path):
    old = [json.loads(verdict(i).model_dump_json(exclude={"decided_by", "checked_step", "checked_claim",
                                                            "conflict"})) for i in range(3)]
    verdicts = [Verdict.model_validate(v) for v in old]
    out = study(tmp_path / "old", verdicts, medicine={"problem_keys": [], "categories": {"execution": 3},
                                                      "chosen_sources": {"reference": 3}})
    assert table(out, "categories_by_layer")[1:] == [["kv3", "judge", "3", "0", "3"]]
    assert table(out, "medicine_layers") == [["quantization", "decided by", "pairs"]]  # built before layers: none
    assert "decided by the step checker" not in (out / "report.md").read_text()
