"""The paired comparison on hand-built attempts with hand-computed values, on the real GSM8K model
solutions (the authors' labels), and the ``compare`` command end to end."""

from __future__ import annotations

import doctest
import json
import math
from collections import Counter

import pytest

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.metrics import wilson_interval
from quantmedic.pipelines.data import shipped_path
from quantmedic.pipelines.evaluation import compare as compare_module
from quantmedic.pipelines.evaluation.compare import (ALL_FAILURES, FLIPPED_FAILURES, compare, mcnemar_exact, to_json,
                                                     to_markdown, write_comparison)
from quantmedic.pipelines.evaluation.comparison_json import ComparisonSummary
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.records import Attempt, Problem, Quantization, Sampling

FP = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
QUANT = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0]
# both right: P0-3; right -> wrong: P4-8; wrong -> right: P9; both wrong: P10-11
AWQ = Quantization(method="awq", bits=4)


def problem(i: int) -> Problem:
    return Problem(text=f"Problem {i}: what is {i} + 1?", reference_answer=str(i + 1), source="toy",
                   source_id=f"P{i}", subject="Algebra" if i < 6 else "Geometry", level=i % 3 + 1)


def make(i: int, correct: bool | None, *, quantized: bool, steps=None, tokens: int | None = None,
         finish: str | None = None, sample: int = 0) -> Attempt:
    answer = i + 1 if correct else i + 2
    return Attempt(problem=problem(i), steps=steps or (f"We add {i} and 1.", f"A: {answer}"), correct=correct,
                   final_answer=str(answer), model="toy", quantization=AWQ if quantized else None,
                   completion_tokens=tokens, finish_reason=finish, sampling=Sampling(sample_index=sample),
                   grading="math-verify")


def hand_built() -> tuple[list[Attempt], list[Attempt]]:
    loop = ("Let me check the sum again.",) * 3 + ("A: 13",)
    fp = [make(i, bool(c), quantized=False, tokens=100) for i, c in enumerate(FP)]
    quant = [make(i, bool(c), quantized=True, tokens=150) for i, c in enumerate(QUANT)]
    quant[10] = make(10, False, quantized=True, steps=loop, tokens=150)                # repetition loop
    quant[11] = make(11, False, quantized=True, tokens=150, finish="length")           # truncated
    fp.append(make(12, True, quantized=False, tokens=100))                            # unpaired
    quant.append(make(13, True, quantized=True, tokens=150))                          # unpaired
    fp.append(make(14, True, quantized=False, tokens=100))                            # ungradable pair
    quant.append(make(14, None, quantized=True, tokens=150).model_copy(update={"grading": "ungradable: timeout"}))
    return fp, quant


def test_mcnemar_exact_hand_values():
    assert mcnemar_exact(5, 1) == pytest.approx(2 * (1 + 6) / 2 ** 6)         # 0.21875
    assert mcnemar_exact(1, 5) == mcnemar_exact(5, 1)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_exact(1, 0) == 1.0 and mcnemar_exact(7, 7) == 1.0
    assert mcnemar_exact(0, 200) == pytest.approx(2 * 0.5 ** 200)               # exact, no float overflow
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_paired_accuracy_flips_and_mcnemar_on_hand_built_attempts():
    fp, quant = hand_built()
    c = compare(fp, quant)
    assert (c.fp_label, c.quant_label) == ("toy", "toy [awq 4-bit]")
    assert (c.fp_total, c.quant_total, c.paired, c.usable) == (14, 14, 13, 12)
    assert (c.unpaired_fp, c.unpaired_quant, c.ungradable_pairs) == (1, 1, 1)
    assert (c.fp.correct, c.fp.n, c.quant.correct, c.quant.n) == (9, 12, 5, 12)
    assert c.fp.interval == wilson_interval(9, 12) and c.quant.interval == wilson_interval(5, 12)
    assert (c.both_right, c.both_wrong) == (4, 2)
    assert [a.problem.source_id for a in c.right_to_wrong] == ["P4", "P5", "P6", "P7", "P8"]
    assert all(a.quantization == AWQ and a.correct is False for a in c.right_to_wrong)
    assert c.right_to_wrong == [quant[i] for i in range(4, 9)]
    assert [a.problem.source_id for a in c.wrong_to_right] == ["P9"]
    assert c.p_value == pytest.approx(0.21875)
    assert c.difference == pytest.approx(-4 / 12)
    half = 1.959964 * math.sqrt(6 - 12 * (1 / 3) ** 2) / 12
    assert (c.difference_interval.low, c.difference_interval.high) == pytest.approx((-1 / 3 - half, -1 / 3 + half))


def test_breakdowns_by_subject_and_level():
    c = compare(*hand_built())
    by_subject = {g.group: (g.fp.correct, g.quant.correct, g.fp.n, g.right_to_wrong, g.wrong_to_right)
                  for g in c.by_subject}
    assert by_subject == {"Algebra": (6, 4, 6, 2, 0), "Geometry": (3, 1, 6, 3, 1)}
    by_level = [(g.group, g.fp.correct, g.quant.correct, g.fp.n, g.right_to_wrong, g.wrong_to_right)
                for g in c.by_level]
    assert by_level == [("1", 3, 3, 4, 1, 1), ("2", 3, 1, 4, 2, 0), ("3", 3, 1, 4, 2, 0)]
    assert c.by_subject[1].quant.interval == wilson_interval(1, 6)


def test_output_length_and_degenerate_rates():
    c = compare(*hand_built())
    assert (c.fp_outputs.unit, c.fp_outputs.mean_length, c.quant_outputs.mean_length) == ("tokens", 100, 150)
    assert (c.fp_outputs.degenerate.correct, c.fp_outputs.n) == (0, 13)
    assert (c.quant_outputs.degenerate.correct, c.quant_outputs.n) == (2, 13)
    assert dict(c.quant_outputs.degenerate_kinds) == {"repetition_loop": 1, "truncated": 1}
    # without completion_tokens on every attempt, lengths are whitespace-separated words
    fp = [make(0, True, quantized=False, steps=("one two three", "A: 1"))]
    quant = [make(0, False, quantized=True, steps=("one two", "three four five", "A: 2"), tokens=9)]
    words = compare(fp, quant)
    assert (words.fp_outputs.unit, words.fp_outputs.mean_length, words.quant_outputs.mean_length) == ("words", 5, 7)


def test_pairs_by_sample_index_and_rejects_bad_sets():
    fp = [make(0, True, quantized=False, sample=s) for s in (0, 1)]
    quant = [make(0, False, quantized=True, sample=s) for s in (1, 2)]
    c = compare(fp, quant)
    assert (c.paired, c.unpaired_fp, c.unpaired_quant, len(c.right_to_wrong)) == (1, 1, 1, 1)
    assert c.right_to_wrong[0].sampling.sample_index == 1
    with pytest.raises(ValueError, match="two attempts for problem"):
        compare(fp + fp[:1], quant)
    with pytest.raises(ValueError, match="no attempt pairs up"):
        compare(fp[:1], quant[1:])


def test_real_gsm8k_models_compared_with_the_authors_labels():
    attempts = load_attempts(shipped_path("gsm8k-solutions"))
    big = [a for a in attempts if a.model == "gsm8k-175b-verification"]
    small = [a for a in attempts if a.model == "gsm8k-6b-finetuning"]
    rows = [json.loads(line) for line in shipped_path("gsm8k-solutions").read_text().splitlines()]
    counts = Counter((r["175b_verification"]["is_correct"], r["6b_finetuning"]["is_correct"]) for r in rows)
    c = compare(big, small)
    assert (c.paired, c.usable, c.fp.correct, c.quant.correct) == (1319, 1319, 742, 286)
    assert len(c.right_to_wrong) == counts[(True, False)] and len(c.wrong_to_right) == counts[(False, True)]
    assert c.both_right == counts[(True, True)] and c.both_wrong == counts[(False, False)]
    assert c.p_value < 1e-50 and c.by_subject == () and c.by_level == ()
    assert c.fp_outputs.unit == "words"


def test_json_markdown_and_docstrings():
    c = compare(*hand_built())
    data = to_json(c)
    assert data["pairs"] == {"present": 13, "usable": 12, "ungradable": 1, "both_right": 4, "both_wrong": 2,
                             "right_to_wrong": 5, "wrong_to_right": 1}
    assert data["full_precision"]["accuracy"] == 0.75 and data["mcnemar_exact_p"] == pytest.approx(0.21875)
    interval = wilson_interval(5, 12)
    assert data["quantized"]["wilson95"] == [round(interval.low, 6), round(interval.high, 6)]
    assert [f["source_id"] for f in data["right_to_wrong"]] == ["P4", "P5", "P6", "P7", "P8"]
    first = data["right_to_wrong"][0]
    assert (first["full_precision_answer"], first["quantized_answer"]) == ("5", "6")
    assert data["outputs"]["quantized"]["degenerate_kinds"] == {"repetition_loop": 1, "truncated": 1}
    assert "lengths" not in data and c.fp_lengths is None  # no thinking on either side: no length statistics
    json.dumps(data)
    markdown = to_markdown(c)
    assert "| toy (full precision) | 75.0% [46.8, 91.1] (9/12) |" in markdown
    assert "p = 0.2188" in markdown and "## By subject" in markdown and "## By level" in markdown
    assert "## Right → wrong (quantized failures, for the judge): 5" in markdown
    result = doctest.testmod(compare_module)
    assert result.attempted > 0 and result.failed == 0


def test_the_summary_reads_back_what_the_report_needs(tmp_path):
    fp, quant = hand_built()
    c, written = write_comparison(fp, quant, tmp_path / "out")
    assert written == ["comparison.json", "comparison.md", "accuracy_by_subject.png", "accuracy_by_level.png",
                       "flips.png", FLIPPED_FAILURES, ALL_FAILURES]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(written)
    summary = ComparisonSummary.read(tmp_path / "out")
    assert summary == ComparisonSummary.read(tmp_path / "out" / "comparison.json") == ComparisonSummary.of(c)
    data = to_json(c)
    for side, key in ((summary.full_precision, "full_precision"), (summary.quantized, "quantized")):
        raw = data[key]
        assert (side.label, side.attempts, side.unpaired, side.correct, side.n, side.accuracy) == (
            raw["label"], raw["attempts"], raw["unpaired"], raw["correct"], raw["n"], raw["accuracy"])
        assert [side.wilson95.low, side.wilson95.high] == raw["wilson95"]
        assert (side.outputs.n, side.outputs.length_unit) == (13, "tokens")
    assert (summary.quantized.label, summary.quantized.correct, summary.quantized.n) == ("toy [awq 4-bit]", 5, 12)
    assert summary.pairs.__dict__ == data["pairs"]
    assert (summary.pairs.right_to_wrong, summary.pairs.wrong_to_right) == (5, 1)
    assert summary.difference == data["difference"] == round(-4 / 12, 6)
    assert [summary.difference_wald95.low, summary.difference_wald95.high] == data["difference_wald95"]
    assert summary.mcnemar_exact_p == pytest.approx(0.21875)
    assert (summary.full_precision.outputs.mean_length, summary.quantized.outputs.mean_length) == (100, 150)
    assert dict(summary.quantized.outputs.degenerate_kinds) == {"repetition_loop": 1, "truncated": 1}
    assert (summary.quantized.outputs.degenerate.correct, summary.quantized.outputs.degenerate.n) == (2, 13)
    assert [g.group for g in summary.by_subject] == ["Algebra", "Geometry"] and len(summary.by_level) == 3
    assert summary.full_precision.lengths is None and summary.quantized.lengths is None
    failures = read_records(tmp_path / "out" / ALL_FAILURES, Attempt)
    assert failures == [a for a in quant if a.correct is False] and len(failures) == 7
    (tmp_path / "bad.json").write_text('{"pairs": {}}')
    with pytest.raises(InputError, match="not a comparison"):
        ComparisonSummary.read(tmp_path / "bad.json")
    with pytest.raises(InputError, match="no such file"):
        ComparisonSummary.read(tmp_path)


# --- the compare command -------------------------------------------------------------------------


def test_compare_command_writes_the_report_plots_and_flipped_failures(eval_cli, tmp_path):
    fp, quant = hand_built()
    write_records(tmp_path / "fp.jsonl", fp)
    write_records(tmp_path / "q.jsonl", quant)
    out = tmp_path / "report"
    result = eval_cli("compare", tmp_path / "fp.jsonl", tmp_path / "q.jsonl", "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "comparison.json").read_text())
    assert data["pairs"]["right_to_wrong"] == 5 and data["mcnemar_exact_p"] == pytest.approx(0.21875)
    assert (out / "comparison.md").read_text() == to_markdown(compare(fp, quant))
    for png in ("accuracy_by_subject.png", "accuracy_by_level.png", "flips.png"):
        blob = (out / png).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000
    flipped = read_records(out / "flipped_failures.jsonl", Attempt)
    assert flipped == quant[4:9] and all(a.correct is False for a in flipped)
    assert read_records(out / "failures.jsonl", Attempt) == [a for a in quant if a.correct is False]
    assert "# toy vs toy [awq 4-bit]" in result.output and "5 right → wrong" in result.output
    assert "flipped_failures.jsonl, failures.jsonl to" in result.output


def test_compare_command_rejects_ungraded_and_duplicated_input(eval_cli, tmp_path):
    fp, quant = hand_built()
    write_records(tmp_path / "fp.jsonl", fp)
    write_records(tmp_path / "ungraded.jsonl", [a.model_copy(update={"correct": None}) for a in quant])
    result = eval_cli("compare", tmp_path / "fp.jsonl", tmp_path / "ungraded.jsonl", "--out", tmp_path / "r")
    assert isinstance(result.exception, InputError) and "no graded attempts" in str(result.exception)
    assert result.exception.path == str(tmp_path / "ungraded.jsonl")
    write_records(tmp_path / "dup.jsonl", quant + quant[:1])
    result = eval_cli("compare", tmp_path / "fp.jsonl", tmp_path / "dup.jsonl", "--out", tmp_path / "r")
    assert isinstance(result.exception, InputError) and "two attempts" in str(result.exception)
    write_records(tmp_path / "other.jsonl", [make(40, True, quantized=True)])
    result = eval_cli("compare", tmp_path / "fp.jsonl", tmp_path / "other.jsonl", "--out", tmp_path / "r")
    assert isinstance(result.exception, InputError) and "no attempt pairs up" in str(result.exception)
    assert not (tmp_path / "r").exists()
