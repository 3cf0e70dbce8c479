import json

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import write_records


def test_gsm8k_model_solutions(gsm8k_solutions):
    attempts = load_attempts(gsm8k_solutions)
    assert len(attempts) == 2 * 1319
    first = attempts[0]
    assert first.model == "gsm8k-6b-finetuning" and first.correct is False
    assert first.steps[-1] == "A: 26" and first.final_answer == "26"
    assert "<<" not in first.solution_text  # calculator notes stripped
    assert first.problem.reference_answer == "18" and first.problem.source == "gsm8k"
    assert sum(a.correct is False for a in attempts) == sum(
        1 for line in gsm8k_solutions.read_text().splitlines() for key in ("6b_finetuning", "175b_verification")
        if json.loads(line)[key]["is_correct"] in (False, "False"))


def test_processbench_json(processbench):
    attempts = load_attempts(processbench)
    raw = json.loads(processbench.read_text())
    assert len(attempts) == len(raw) == 400
    assert [a.label for a in attempts] == [r["label"] for r in raw]
    assert [list(a.steps) for a in attempts[:5]] == [r["steps"] for r in raw[:5]]
    assert attempts[0].problem.source_id == "gsm8k-0" and attempts[0].model == raw[0]["generator"]


def test_own_jsonl_roundtrip(tmp_path, processbench):
    attempts = load_attempts(processbench)[:10]
    path = write_records(tmp_path / "attempts.jsonl", attempts)
    assert load_attempts(path) == attempts


def test_text_jsonl_is_segmented(tmp_path):
    path = tmp_path / "text.jsonl"
    path.write_text(json.dumps({"problem": "2+2?", "solution": "2+2 = 5\n\nSo \\boxed{5}", "correct": False,
                                "answer": 4}) + "\n")
    (attempt,) = load_attempts(path)
    assert attempt.steps == ("2+2 = 5", "So \\boxed{5}") and attempt.final_answer == "5"
    assert attempt.problem.reference_answer == "4" and attempt.correct is False


@pytest.mark.parametrize("content, line, field", [
    ('{"problem": "p", "steps": ["a"], "label": -1}\n{"problem": "p", "steps": ["a", ""], "label": 0}\n', 2, "steps.1"),
    ('{"problem": "p", "steps": ["a"], "label": -1}\n{"problem": "p", "steps": [], "label": 0}\n', 2, "steps"),
    ('{"problem": "p", "steps": ["a"], "label": 3}\n', 1, "label"),
    ('{"question": "q", "ground_truth": "A: 1", "6b_finetuning": {"is_correct": "maybe", "solution": "A: 1"}}\n',
     1, "6b_finetuning.is_correct"),
    ('{"question": "q", "ground_truth": "A: 1", "6b_finetuning": {"is_correct": true}}\n', 1, "solution"),
    ('{"problem": "p", "solution": "x"}\n{"solution": "x"}\n', 2, "problem"),
])
def test_bad_records_name_file_line_and_field(tmp_path, content, line, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        load_attempts(path)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), line, field)


def test_bad_json_array_element_gives_its_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"problem": "p", "steps": ["a"], "label": -1},\n  {"problem": "p",\n   "steps": "oops"}\n]')
    with pytest.raises(InputError) as info:
        load_attempts(path)
    assert (info.value.line, info.value.field) == (3, "steps")
    path.write_text('[\n {"problem": "p", "steps": ["a"]},\n {"problem": \n]')
    with pytest.raises(InputError, match="not valid JSON") as info:
        load_attempts(path)
    assert info.value.line == 4


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_attempts(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no records"):
        load_attempts(tmp_path / "empty.jsonl")


def test_the_format_of_a_lighteval_details_file_is_detected(tmp_path):
    from quantmedic.judge.adapters import detect_format

    record = {"full_prompt": "<｜User｜>What is 2+2?<｜Assistant｜><think>\n", "generated_text": "4.</think>\\boxed{4}",
              "gold": ["\\boxed{4}"], "metrics": {"extractive_match": 1.0}}
    assert detect_format(record) == "lighteval"
    assert detect_format({"doc": {"query": "q"}, "model_response": {"text": ["a"]}}) == "lighteval"
    assert detect_format({"problem": "q", "solution": "a"}) == "text"
    path = tmp_path / "details.json"
    path.write_text(json.dumps([record]), encoding="utf-8")
    (attempt,) = load_attempts(path)
    assert (attempt.problem.text, attempt.problem.reference_answer, attempt.final_answer) == ("What is 2+2?", "4", "4")
    assert attempt.thinking.text == "4." and attempt.correct is True
    path.write_text(json.dumps([{k: v for k, v in record.items() if k != "generated_text"}]), encoding="utf-8")
    with pytest.raises(InputError, match='details.json:1: field "generated_text": missing'):
        load_attempts(path)
