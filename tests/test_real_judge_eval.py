"""judge-eval with the two real local servers as two judges (llama.cpp and vLLM, both SmolLM2-135M)
on a small slice of the shipped ProcessBench GSM8K split. The judges are weak; the test checks that
what the report says follows from what the judges answered."""

import json

import pytest

from quantmedic.judge.metrics import processbench_scores

from .test_cli_judge import cli

pytestmark = pytest.mark.slow


def test_judge_eval_with_llama_cpp_and_vllm(llama_endpoint, vllm_endpoint, tmp_path):
    out = tmp_path / "eval"
    result = cli("judge-eval", "processbench-gsm8k", "--base-url", llama_endpoint.base_url, "-m", "local",
                 "--base-url", vllm_endpoint.base_url, "-m", "local", "--limit", "4", "--max-tokens", "300",
                 "--invalid-retries", "0", "--timeout", "300", "--out", out, "--cache", tmp_path / "c.sqlite",
                 "--bootstrap", "200")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    names = sorted(metrics["judges"])
    assert len(names) == 2 and all(n.startswith("local@127.0.0.1:") for n in names)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["label"] == -1 for r in rows} == {True, False}
    for name in names:
        pairs = [(r["label"], r["judges"][name]["step"]) for r in rows]
        scores = processbench_scores(pairs)
        judged = metrics["judges"][name]
        assert (judged["error_accuracy"], judged["correct_accuracy"], judged["f1"]) == (
            scores.error_accuracy, scores.correct_accuracy, scores.f1)
        assert judged["unscored"] == sum(step is None for _, step in pairs)
        assert judged["requests"] == 4 and judged["prompt_tokens"] > 4 * 500
    (pair,) = metrics["agreement"]
    assert pair["n_items"] == sum(all(r["judges"][n]["step"] is not None for n in names) for r in rows)
    assert (out / "steps.png").stat().st_size > 10_000 and (out / "calibration.png").stat().st_size > 10_000
