"""Reasoning models' length statistics and the error mix by position in the thinking, on the shipped
DeepSeek-R1-Distill-Qwen-1.5B traces (3-bit KV cache, MATH-500): recomputed here from the records,
through ``quantmedic compare`` end to end, and in the study report."""

from __future__ import annotations

import doctest
import json
import math
import re
from statistics import fmean, median, stdev

import pytest

from quantmedic.judge.metrics import wilson_interval
from quantmedic.judge.step_format import ModelOutput, estimate_tokens, parse_completion
from quantmedic.pipelines.data import shipped_path
from quantmedic.pipelines.evaluation import lengths as lengths_module, section_positions as positions_module
from quantmedic.pipelines.evaluation.compare import LENGTHS_PNG, compare, to_json, to_markdown, write_comparison
from quantmedic.pipelines.evaluation.comparison_json import ComparisonSummary
from quantmedic.pipelines.evaluation.lengths import LengthSummary, count_reflections, t_quantile
from quantmedic.pipelines.evaluation.section_positions import SectionPositionMix
from quantmedic.pipelines.study.report import write_report
from quantmedic.taxonomy.jsonl import write_records
from quantmedic.taxonomy.records import Attempt, Problem, Quantization, Verdict

from tests.test_compare import hand_built

KV3 = Quantization(method="kvquant", bits=3, kv_cache_dtype="int3")
T95 = {99: 1.984217, 60: 2.000298, 38: 2.024394}  # Student-t 97.5% quantiles, from the printed tables


def _problem_text(prompt: str) -> str:
    return prompt.split("<｜User｜>", 1)[1].split("\n\nPlease reason step by step", 1)[0]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return json.loads(shipped_path("r1-kv3-math500-traces").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def traces(records) -> list[Attempt]:
    """The 100 traces as graded Attempts (correct: lighteval's extractive_match)."""
    out = []
    for r in records:
        a = parse_completion(Problem(text=_problem_text(r["full_prompt"])),
                             ModelOutput(r["generated_text"], prompt=r["full_prompt"]), model="r1-distill-1.5b",
                             quantization=KV3)
        out.append(a.model_copy(update={"correct": r["metrics"]["extractive_match"] == 1.0}))
    return out


def _gold_attempts(records, traces) -> list[Attempt]:
    """The reference solutions of the same problems: a full-precision side without any thinking."""
    return [parse_completion(t.problem, ModelOutput(r["gold"][0]), model="reference").model_copy(
        update={"correct": True}) for r, t in zip(records, traces)]


def _mean_t95(values, df_key):
    half = T95[df_key] * stdev(values) / math.sqrt(len(values))
    return fmean(values) - half, fmean(values) + half


def test_t_quantiles_and_the_doctests_of_the_rules():
    for df, value in T95.items():
        assert t_quantile(0.95, df) == pytest.approx(value, abs=2e-6)
    assert t_quantile(0.99, 5) == pytest.approx(4.032143, abs=2e-6) and t_quantile(0.95, 2) == pytest.approx(4.302653)
    for module in (lengths_module, positions_module):
        result = doctest.testmod(module)
        assert result.attempted >= 1 and result.failed == 0
    assert count_reflections("WAIT. Let me re-examine... On second\nthought, hmmmm.") == 4
    assert count_reflections("wait-time, don't-wait, let me checkout") == 0


def test_the_statistics_on_the_shipped_traces_equal_a_direct_recomputation(records, traces):
    summary = LengthSummary.of(a for a in traces)  # any iterable: a generator here
    s = summary.all
    tokens = [round(len(t.thinking.text) / 3.5) for t in traces]
    assert (s.attempts, s.thinking) == (100, 100)
    assert (s.thinking_tokens.mean, s.thinking_tokens.median) == (pytest.approx(fmean(tokens)), median(tokens))
    assert (s.thinking_tokens.t95.low, s.thinking_tokens.t95.high) == pytest.approx(_mean_t95(tokens, 99))
    assert s.thinking_tokens.estimated == 100  # lighteval records carry no token counts
    open_ended = [r for r in records if "</think>" not in r["generated_text"]]
    assert len(open_ended) == 13 and (s.truncated, s.truncated_share) == (13, 0.13)
    assert s.truncated_wilson95 == wilson_interval(13, 100)
    solutions = [estimate_tokens(t.solution_text) for t in traces if not t.truncated_thinking]
    assert s.solution_tokens.n == 87 and s.solution_tokens.mean == pytest.approx(fmean(solutions))
    assert s.sections.mean == pytest.approx(fmean(len(t.thinking.sections) for t in traces))
    rates = [1000 * count_reflections(t.thinking.text) / n for t, n in zip(traces, tokens)]
    assert s.reflections_per_1k.mean == pytest.approx(fmean(rates)) and s.reflections_per_1k.mean > 0
    waits = sum(len(re.findall(r"(?i)(?<![\w'-])wait(?![\w'-])", t.thinking.text)) for t in traces)
    assert s.reflections > waits > 0
    right = [n for n, t in zip(tokens, traces) if t.correct]
    wrong = [n for n, t in zip(tokens, traces) if not t.correct]
    assert (summary.right.thinking, summary.wrong.thinking) == (61, 39) == (len(right), len(wrong))
    assert summary.right.thinking_tokens.mean == pytest.approx(fmean(right))
    assert (summary.wrong.thinking_tokens.t95.low, summary.wrong.thinking_tokens.t95.high) == pytest.approx(
        _mean_t95(wrong, 38))
    # the study's finding holds here: wrong answers think longer, even leaving the 13 cut-off traces out
    assert summary.wrong.thinking_tokens.mean > 2 * summary.right.thinking_tokens.mean
    closed_wrong = [n for n, t in zip(tokens, traces) if not t.correct and not t.truncated_thinking]
    assert fmean(closed_wrong) > fmean(right) and summary.right.truncated == 0
    assert LengthSummary.from_json(json.loads(json.dumps(summary.to_json()))).all.truncated_share == 0.13


def test_compare_command_reports_the_lengths_of_both_sides(eval_cli, records, traces, tmp_path):
    gold = _gold_attempts(records, traces)
    mixed = [t.model_copy(update={"quantization": None, "id": ""}) for t in traces[:50]] + gold[50:]
    for name, fp in (("mixed", mixed), ("no-thinking", gold)):
        write_records(tmp_path / f"{name}.jsonl", fp)
    write_records(tmp_path / "kv3.jsonl", traces)
    for name, fp in (("mixed", mixed), ("no-thinking", gold)):
        out = tmp_path / f"cmp-{name}"
        result = eval_cli("compare", tmp_path / f"{name}.jsonl", tmp_path / "kv3.jsonl", "--out", out)
        assert result.exit_code == 0, result.output
        data = json.loads((out / "comparison.json").read_text())
        c = compare(fp, traces)
        assert data["lengths"]["quantized"] == LengthSummary.of(traces).to_json() == to_json(c)["lengths"]["quantized"]
        markdown = (out / "comparison.md").read_text()
        assert markdown == to_markdown(c) and "## Lengths" in markdown and "| r1-distill-1.5b [kvquant 3-bit] | all |" \
            in markdown and "13.0% [7.8, 21.0] (13/100)" in markdown
        assert (out / LENGTHS_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        summary = ComparisonSummary.read(out)
        assert summary == ComparisonSummary.of(c) and summary.quantized.lengths.all.truncated == 13
    fp_lengths = ComparisonSummary.read(tmp_path / "cmp-mixed").full_precision.lengths
    assert (fp_lengths.all.attempts, fp_lengths.all.thinking) == (100, 50)  # the gold solutions count for solution only
    assert fp_lengths.all.solution_tokens.n == 50 - sum(t.truncated_thinking for t in traces[:50]) + 50
    none = ComparisonSummary.read(tmp_path / "cmp-no-thinking").full_precision.lengths
    assert none.all.thinking == 0 and none.all.thinking_tokens is None and none.all.truncated_share is None
    assert none.all.reflections_per_1k is None and none.all.solution_tokens.n == 100


def test_a_comparison_without_thinking_has_no_lengths(tmp_path):
    fp, quant = hand_built()
    c, written = write_comparison(fp, quant, tmp_path / "out")
    assert c.fp_lengths is None and c.quant_lengths is None and LENGTHS_PNG not in written
    assert "lengths" not in to_json(c) and "## Lengths" not in to_markdown(c)
    assert ComparisonSummary.read(tmp_path / "out").quantized.lengths is None


def _verdict(attempt: Attempt, section: int | None, category: str | None = "logic", status: str = "ok") -> Verdict:
    return Verdict(attempt=attempt, status=status, first_wrong_section=section, scope="thinking",
                   category=category if status == "ok" else None, judge_model="test-judge", taxonomy="default@1",
                   config=f"{section}-{category}-{status}")


def _thinking_verdicts(traces) -> tuple[list[Verdict], dict]:
    """Verdicts on real traces with known sections: (attempt, section) placed in known quarters."""
    wrong = [t for t in traces if not t.correct and len(t.thinking.sections) >= 8]
    a, b = wrong[0], wrong[1]
    na, nb = len(a.thinking.sections), len(b.thinking.sections)
    verdicts = [_verdict(a, 0), _verdict(b, nb - 1), _verdict(a, (na + 1) // 2, "arithmetic"),  # Q1, Q4, Q3
                _verdict(b, nb // 4 + (nb % 4 > 0), "arithmetic"),                        # Q2
                _verdict(a, na - 1, None),                                                 # Q4, no category
                _verdict(a, -1), _verdict(a, None), _verdict(b, 3, status="unscored"),     # not counted
                _verdict(a, na)]                                                           # no such section
    return verdicts, {"logic": (1, 0, 0, 1), "arithmetic": (0, 1, 1, 0), "(no category)": (0, 0, 0, 1)}


def test_the_error_mix_by_position_in_the_thinking(traces):
    verdicts, expected = _thinking_verdicts(traces)
    mix = SectionPositionMix.of(iter(verdicts))
    assert {r.category: r.counts for r in mix.rows} == expected and mix.skipped == 1
    assert mix.all.counts == (1, 1, 1, 2) and mix.all.total == 5
    logic = next(r for r in mix.rows if r.category == "logic")
    assert logic.shares == (0.5, 0.0, 0.0, 0.5)
    headers, rows = mix.table()
    assert headers[0] == "category" and rows[-1][:3] == ["all", 5, "1 (20%)"] and rows[-1][-1] == "2 (40%)"
    assert SectionPositionMix.of([]).all.shares is None


def _study(root, fp, quant, verdicts):
    compare_dir, judge_dir = root / "stages" / "compare-kv3" / "k1", root / "stages" / "judge-kv3" / "k1"
    write_comparison(fp, quant, compare_dir)
    judge_dir.mkdir(parents=True)
    write_records(judge_dir / "verdicts.jsonl", verdicts)
    state = {"compare:kv3": {"key": "k1", "status": "done", "folder": "stages/compare-kv3/k1"},
             "judge:kv3": {"key": "k1", "status": "done", "folder": "stages/judge-kv3/k1"}}
    (root / "state.json").write_text(json.dumps(state))
    return write_report(root)


def test_the_study_report_has_the_lengths_and_the_error_mix_only_for_reasoning_models(records, traces, tmp_path):
    verdicts, _ = _thinking_verdicts(traces)
    page = _study(tmp_path / "reasoning", _gold_attempts(records, traces), traces, verdicts)
    report = page.parent / "report.md"
    text = report.read_text()
    assert "## Reasoning: lengths and where the thinking goes wrong" in text and "kv3" in text
    lengths_csv = (page.parent / "tables" / "lengths.csv").read_text().splitlines()
    assert lengths_csv[0].startswith("model,answers,attempts,accuracy") and len(lengths_csv) == 1 + 6
    assert any(line.startswith("kv3,all,100,") and "13/100" in line for line in lengths_csv)
    positions = (page.parent / "tables" / "section_positions.csv").read_text().splitlines()
    assert positions[-1] == "kv3,all,5,1 (20%),1 (20%),1 (20%),2 (40%)"
    assert (page.parent / "figures" / "lengths-kv3.png").is_file() and "data-figure='lengths-kv3'" in page.read_text()
    fp, quant = hand_built()
    plain = _study(tmp_path / "plain", fp, quant, [])
    assert "## Reasoning" not in (plain.parent / "report.md").read_text() and "id='lengths'" not in plain.read_text()
    assert not (plain.parent / "tables" / "lengths.csv").exists()
