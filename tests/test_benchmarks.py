"""Benchmark loaders: the shipped sets, local JSONL with a field mapping, multiple choice, and the
Hugging Face path (through ``datasets.load_dataset("json", data_files=...)``, no Hub access)."""

from __future__ import annotations

import doctest
import json
from collections import Counter

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.pipelines.evaluation import benchmarks
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.taxonomy.errors import InputError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_math500_keeps_subjects_levels_answers_and_solutions():
    problems = load_benchmark("math500")
    assert len(problems) == 500 and len({p.id for p in problems}) == 500
    assert Counter(p.subject for p in problems) == {
        "Algebra": 124, "Intermediate Algebra": 97, "Prealgebra": 82, "Number Theory": 62, "Precalculus": 56,
        "Geometry": 41, "Counting & Probability": 38}
    assert Counter(p.level for p in problems) == {5: 134, 4: 128, 3: 105, 2: 90, 1: 43}
    first = problems[0]
    assert first.reference_answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert first.source == "math500" and first.source_id == "test/precalculus/807.json"
    assert first.reference_solution.startswith("We have that $r = \\sqrt{0^2 + 3^2} = 3.$")
    assert all(p.reference_answer and p.reference_solution and p.choices is None for p in problems)


def test_gsm8k_answer_after_hashes_and_ids_shared_with_the_model_solutions():
    problems = load_benchmark("gsm8k")
    assert len(problems) == 1319
    assert [p.reference_answer for p in problems[:3]] == ["18", "3", "70000"]
    assert problems[0].reference_solution.endswith("every day at the farmer’s market.\n#### 18")
    assert all("<<" not in p.reference_solution and "####" not in p.reference_answer for p in problems)
    assert problems[5].source_id == "test-5" and problems[0].subject is None
    # the same problems as the shipped model solutions: attempts pair with benchmark problems by id
    attempts = load_attempts(benchmarks.shipped_path("gsm8k-solutions"))
    by_id = {p.id: p for p in problems}
    assert {a.problem.id for a in attempts} == set(by_id)
    assert all(by_id[a.problem.id].reference_answer == a.problem.reference_answer for a in attempts)


def test_aime24_answers_and_ids():
    problems = load_benchmark("aime24")
    assert len(problems) == 30
    assert problems[0].reference_answer == "204" and problems[0].source_id == "60"
    assert all(p.reference_answer.isdigit() and p.source == "aime24" for p in problems)
    assert load_benchmark("aime24", limit=4) == problems[:4]
    with pytest.raises(ValueError, match="ships only its test split"):
        load_benchmark("aime24", split="train")


def test_local_jsonl_with_a_field_mapping(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"q": "What is 6*7?", "gold": 42, "work": "6*7=42", "area": "arith", "hard": "easy", "key": "a1"},
        {"q": "Janet has 3 apples...", "gold": "Janet eats 1.\n#### 2", "work": None, "area": "words",
         "hard": 3, "key": "a2"},
    ])
    problems = load_benchmark(path, fields={"text": "q", "reference_answer": "gold", "reference_solution": "work",
                                            "subject": "area", "level": "hard", "source_id": "key"})
    assert [(p.reference_answer, p.subject, p.level, p.source_id, p.source) for p in problems] == [
        ("42", "arith", "easy", "a1", "mine"), ("2", "words", 3, "a2", "mine")]
    assert problems[0].reference_solution == "6*7=42"
    assert problems[1].reference_solution == "Janet eats 1.\n#### 2"  # null: the GSM8K-style answer text
    # without a mapping the usual keys are detected
    detected = load_benchmark(write_jsonl(tmp_path / "plain.jsonl", [{"problem": "1+1?", "answer": "2",
                                                                         "solution": "1+1=2", "id": 9}]))
    assert (detected[0].text, detected[0].reference_answer, detected[0].source_id) == ("1+1?", "2", "9")


def test_missing_field_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"q": "a?", "gold": "1"}, {"q": "b?", "gold": "2"},
                                                {"q": "c?", "answer": "3"}])
    with pytest.raises(InputError) as caught:
        load_benchmark(path, fields={"text": "q", "reference_answer": "gold"})
    assert (caught.value.path, caught.value.line, caught.value.field) == (str(path), 3, "gold")
    assert str(caught.value) == f'{path}:3: field "gold": missing'
    with pytest.raises(InputError, match='field "text"'):
        load_benchmark(write_jsonl(tmp_path / "notext.jsonl", [{"body": "x", "answer": "1"}]))
    with pytest.raises(InputError, match="no such file"):
        load_benchmark(tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="unknown field"):
        load_benchmark(path, fields={"question": "q"})


def test_multiple_choice_from_a_list_field(tmp_path):
    path = write_jsonl(tmp_path / "mmlu.jsonl", [
        {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1},
        {"question": "Capital of France?", "choices": ["Paris", "Rome"], "answer": "Paris"},
        {"question": "Largest?", "choices": ["1", "10", "100"], "answer": "(C)"},
    ])
    problems = load_benchmark(path, fields={"choices": "choices"})
    assert [(p.choices, p.reference_answer) for p in problems] == [
        (("3", "4", "5", "6"), "B"), (("Paris", "Rome"), "A"), (("1", "10", "100"), "C")]
    bad = write_jsonl(tmp_path / "badmc.jsonl", [{"question": "x?", "choices": ["1", "2"], "answer": 5}])
    with pytest.raises(InputError) as caught:
        load_benchmark(bad, fields={"choices": "choices"})
    assert (caught.value.line, caught.value.field) == (1, "answer")
    not_a_list = write_jsonl(tmp_path / "nolist.jsonl", [{"question": "x?", "choices": "1 or 2", "answer": 0}])
    with pytest.raises(InputError, match="expected a list of options"):
        load_benchmark(not_a_list, fields={"choices": "choices"})


GPQA_FIELDS = {"text": "Question", "reference_answer": "Correct Answer", "subject": "High-level domain",
               "choices": ["Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]}


def gpqa_rows(n: int = 12) -> list[dict]:
    return [{"Question": f"Which value is right in case {i}?", "Correct Answer": f"right {i}",
             "Incorrect Answer 1": f"wrong {i}a", "Incorrect Answer 2": f"wrong {i}b",
             "Incorrect Answer 3": f"wrong {i}c", "High-level domain": "Physics" if i % 2 else "Chemistry"}
            for i in range(n)]


def test_gpqa_style_option_fields_with_a_stable_shuffle(tmp_path):
    path = write_jsonl(tmp_path / "gpqa.jsonl", gpqa_rows())
    plain = load_benchmark(path, fields=GPQA_FIELDS)
    assert all(p.reference_answer == "A" and p.choices[0].startswith("right") for p in plain)
    shuffled = load_benchmark(path, fields=GPQA_FIELDS, shuffle_choices=True)
    for p, q in zip(shuffled, plain):
        assert p.id == q.id and sorted(p.choices) == sorted(q.choices)
        assert p.choices["ABCD".index(p.reference_answer)] == q.choices[0]  # the letter follows the right answer
    assert len({p.reference_answer for p in shuffled}) > 1  # the right answer is no longer always A
    assert load_benchmark(path, fields=GPQA_FIELDS, shuffle_choices=True) == shuffled  # same order every time
    missing = write_jsonl(tmp_path / "gpqa_bad.jsonl", [{k: v for k, v in gpqa_rows(1)[0].items()
                                                          if k != "Incorrect Answer 2"}])
    with pytest.raises(InputError) as caught:
        load_benchmark(missing, fields=GPQA_FIELDS)
    assert (caught.value.line, caught.value.field) == (1, "Incorrect Answer 2")


def test_hugging_face_path_through_load_dataset(tmp_path):
    data = write_jsonl(tmp_path / "gpqa_train.jsonl", gpqa_rows(6))
    cache = tmp_path / "hf-cache"
    problems = load_benchmark("json", split="train", fields=GPQA_FIELDS, data_files=str(data),
                              cache_dir=str(cache), source="gpqa", shuffle_choices=True)
    local = load_benchmark(data, fields=GPQA_FIELDS, shuffle_choices=True, source="gpqa")
    assert problems == local and len(problems) == 6  # same mapping code, same problems and ids
    assert {p.subject for p in problems} == {"Physics", "Chemistry"}
    assert load_benchmark("json", split="train", data_files=str(data), cache_dir=str(cache), fields=GPQA_FIELDS,
                          limit=2)[0].source == "json"
    with pytest.raises(InputError) as caught:
        load_benchmark("json", split="train", data_files=str(data), cache_dir=str(cache),
                       fields={**GPQA_FIELDS, "reference_answer": "Answer"})
    assert (caught.value.path, caught.value.line, caught.value.field) == ("json[train]", 1, "Answer")


def test_docstring_examples():
    result = doctest.testmod(benchmarks)
    assert result.attempted > 0 and result.failed == 0


def test_aime90_aime25_and_their_union_aime120():
    aime90, aime25, aime120 = (load_benchmark(name) for name in ("aime90", "aime25", "aime120"))
    assert (len(aime90), len(aime25), len(aime120)) == (90, 30, 120)
    assert aime120 == aime90 + aime25 and len({p.id for p in aime120}) == 120  # ids as in their own sets
    assert {p.source for p in aime120} == {"aime90", "aime25"} and len({p.source_id for p in aime120}) == 120
    # integer answers as math-verify compares them: "024" -> "24", 70 -> "70"
    assert (aime90[0].reference_answer, aime90[0].source_id) == ("24", "aime90-0")
    assert (aime25[0].reference_answer, aime25[0].source_id) == ("70", "aime25-0")
    assert all(isinstance(p.reference_answer, str) and p.reference_answer == str(int(p.reference_answer))
               and 0 <= int(p.reference_answer) <= 999 for p in aime120)
    # the instruction baked into AIME 2025's prompts is stripped: the generation prompt adds its own
    assert aime25[0].text == "Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b.$"
    assert not any("Please reason" in p.text or "boxed" in p.text for p in aime25)
    assert load_benchmark("aime120", limit=92) == aime120[:92]


def test_gpqa_diamond_resolves_to_the_gated_hub_dataset_and_fails_offline_in_one_line(tmp_path):
    """Never downloaded here: the name resolves to the Hub spec, and offline the loader says how to get access."""
    import os
    import subprocess
    import sys

    spec = benchmarks.HUB_BENCHMARKS["gpqa-diamond"]
    assert (spec.dataset, spec.config, spec.split, spec.gated, spec.shuffle_choices) == (
        "Idavidrein/gpqa", "gpqa_diamond", "train", True, True)
    assert spec.fields == GPQA_FIELDS  # the option fields the local GPQA rows above are mapped with
    assert "gpqa-diamond" not in benchmarks.SHIPPED_BENCHMARKS
    assert not list(benchmarks.shipped_path("gsm8k").parents[1].rglob("*gpqa*"))  # never shipped
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "COLUMNS": "400"}
    script = "from quantmedic.pipelines.evaluation.benchmarks import load_benchmark; load_benchmark('gpqa-diamond')"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode != 0 and "InputError" in run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert "gpqa-diamond" in line and "Idavidrein/gpqa" in line and "accept the dataset's terms" in line
    assert "log in" in line
    cli = subprocess.run([sys.executable, "-m", "quantmedic.pipelines.cli", "generate", "m", "--benchmark",
                          "gpqa-diamond", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--out",
                          str(tmp_path / "a.jsonl")], capture_output=True, text=True, env=env, timeout=120)
    assert cli.returncode == 1 and len(cli.stderr.strip().splitlines()) == 1 and "Traceback" not in cli.stderr
    assert "accept the dataset's terms" in cli.stderr and not (tmp_path / "a.jsonl").exists()
    with pytest.raises(ValueError, match="own field mapping"):
        load_benchmark("gpqa-diamond", fields={"text": "Question"})
