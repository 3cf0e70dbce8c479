"""``grade`` and ``compare`` stream their inputs: the streamed paths give what the in-memory ones give, file
for file, and the pool reads its input only as far as its workers have room."""

from __future__ import annotations

import json
import random

from quantmedic.judge.adapters import load_attempts
from quantmedic.pipelines.data import shipped_path
from quantmedic.pipelines.evaluation.compare import (ALL_FAILURES, COMPARISON_JSON, COMPARISON_MD, FLIPPED_FAILURES,
                                                     compare, write_comparison, write_comparison_files)
from quantmedic.pipelines.evaluation.comparison_json import json_chunks, to_json
from quantmedic.pipelines.evaluation.graded_file import grade_into
from quantmedic.pipelines.evaluation.grading import summarize
from quantmedic.pipelines.evaluation.lengths import LengthColumns, LengthNumbers, LengthSummary
from quantmedic.pipelines.evaluation.pool import PREFETCH, iter_pool
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.records import Attempt

from .test_compare import hand_built


def test_compare_of_files_streamed_writes_what_the_lists_give(tmp_path):
    fp, quant = hand_built()
    shuffled = random.Random(0).sample(quant, len(quant))  # flips still come in the full-precision order
    write_records(tmp_path / "fp.jsonl", fp)
    write_records(tmp_path / "q.jsonl", shuffled)
    listed, names = write_comparison(fp, shuffled, tmp_path / "lists")
    streamed, streamed_names = write_comparison_files(tmp_path / "fp.jsonl", tmp_path / "q.jsonl", tmp_path / "files")
    assert names == streamed_names
    for name in (COMPARISON_JSON, COMPARISON_MD, FLIPPED_FAILURES, ALL_FAILURES):
        assert (tmp_path / "files" / name).read_bytes() == (tmp_path / "lists" / name).read_bytes(), name
    text = json.dumps(to_json(listed), indent=2, ensure_ascii=False) + "\n"  # written flip by flip, the same text
    assert (tmp_path / "files" / COMPARISON_JSON).read_text(encoding="utf-8") == text
    assert "".join(json_chunks(compare(fp[:1], quant[:1]))) == json.dumps(to_json(compare(fp[:1], quant[:1])),
                                                                        indent=2, ensure_ascii=False) + "\n"
    assert [b.id for b in streamed.right_to_wrong] == [a.id for a in listed.right_to_wrong] == [
        a.id for a in quant[4:9]]


def test_length_columns_give_back_the_numbers_and_the_same_summary():
    rows = [LengthNumbers(c, t, te, s, se, n, tr, r) for c, t, te, s, se, n, tr, r in (
        (True, 120, False, 30, False, 3, False, 2), (False, None, False, 7, True, 0, False, 0),
        (None, 400, True, None, False, 5, True, 9), (False, 0, False, 12, False, 1, False, 0))]
    columns = LengthColumns()
    for row in rows:
        columns.append(row)
    assert list(columns) == rows and len(columns) == 4 and columns.any_thinking()
    assert LengthSummary.of_numbers(columns) == LengthSummary.of_numbers(rows)


def test_grading_a_streamed_input_gives_what_a_list_gives(tmp_path):
    attempts = load_attempts(shipped_path("gsm8k-solutions"))[:12]
    listed = grade_into(attempts, tmp_path / "a.jsonl", workers=1)
    streamed = grade_into(lambda: iter(attempts + attempts[:2]), tmp_path / "b.jsonl", workers=2, check_labels=True)
    assert (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes() + b"".join(
        (tmp_path / "a.jsonl").read_bytes().splitlines(keepends=True)[:2])  # repeats kept, in input order
    assert (listed.total, streamed.total, streamed.kept) == (12, 14, 0)
    assert streamed.summaries == tuple(summarize(read_records(tmp_path / "b.jsonl", Attempt)))
    assert streamed.agreement is not None and streamed.agreement.total == 14


def double(x: int) -> int:
    return 2 * x


def test_the_pool_reads_its_input_only_as_workers_have_room():
    taken: list[int] = []

    def items():
        for i in range(200):
            taken.append(i)
            yield i

    results = []
    for index, value in iter_pool(double, items(), on_failure=lambda item, failure: None, workers=2, timeout=5.0):
        results.append((index, value))
        assert len(taken) - len(results) <= 2 * PREFETCH + 1  # in flight, plus the one read ahead
    assert sorted(results) == [(i, 2 * i) for i in range(200)]
