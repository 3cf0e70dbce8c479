"""``quantmedic judge --executor``: requests carried as batches in the OpenAI batch file format.

``vllm-batch`` runs the real ``vllm run-batch`` (the CPU build in ``.venv-vllm``).
"""

import json
import re
from pathlib import Path

import jsonschema
import pytest

from quantmedic.judge.batch_files import REQUEST_LINE_SCHEMA
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import Verdict

from .support.vllm_server import SERVER_ENV
from .test_cli_judge import cli

REPO = Path(__file__).resolve().parents[1]
VLLM = REPO / ".venv-vllm" / "bin" / "vllm"
HF_MODEL = REPO / ".cache" / "smollm2-hf"


@pytest.mark.parametrize("args, message", [
    (("--executor", "vllm-batch", "-m", "local"), "--vllm-model"),
    (("--executor", "vllm-batch", "--vllm-model", "m", "--base-url", "http://127.0.0.1:9/v1", "-m", "a", "-m", "b"),
     "exactly one judge"),
    (("--executor", "sideways", "--base-url", "http://127.0.0.1:9/v1", "-m", "a"), "--executor"),
])
def test_a_batch_executor_that_cannot_run_is_one_line_and_exit_2(tmp_path, args, message):
    result = cli("judge", "processbench-gsm8k", "--out", tmp_path / "v.jsonl", *args)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "v.jsonl").exists()


def request_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.requests.jsonl")) for line in path.open()]


@pytest.mark.slow
def test_vllm_run_batch_judges_and_a_rerun_sends_nothing(tmp_path):
    if not VLLM.exists() or not (HF_MODEL / "config.json").exists():
        pytest.skip("no vLLM environment (scripts/setup-test-env.sh makes it)")
    out, batch = tmp_path / "v.jsonl", tmp_path / "batch"
    args = ("judge", "processbench-gsm8k", "--limit", "2", "--out", out, "--cache", tmp_path / "c.sqlite",
            "--executor", "vllm-batch", "--vllm-model", HF_MODEL, "--vllm-command", VLLM, "-m", "local",
            "--batch-dir", batch, "--max-tokens", "200", "--invalid-retries", "0")
    result = cli(*args, timeout=900, env=SERVER_ENV)
    assert result.returncode == 0, result.stderr
    verdicts = read_records(out, Verdict)
    assert len(verdicts) == 2 and all(v.judges and v.judges[0].model == "local" for v in verdicts)
    lines = request_lines(batch)
    assert len(lines) >= 2 and {line["body"]["model"] for line in lines} == {"local"}
    for line in lines:
        jsonschema.validate(line, REQUEST_LINE_SCHEMA)
    again = cli(*args, timeout=300, env=SERVER_ENV)
    assert again.returncode == 0, again.stderr
    # ok verdicts are skipped; any unscored one (a 135M judge) is re-read from the cache: nothing is sent
    assert re.search(r"requests sent / from cache\s*│\s*0 /", again.stderr), again.stderr
    assert request_lines(batch) == lines  # and no new batch


KEY = "sk-batch-SECRET-77c1e2"


def test_openai_batch_submits_then_a_rerun_collects_at_half_the_price(tmp_path):
    from .support.openai_batch_standin import OpenAIBatchStandin

    out, batch = tmp_path / "v.jsonl", tmp_path / "batch"
    with OpenAIBatchStandin(KEY, polls=1, echo_key=True) as server:
        args = ("judge", "processbench-gsm8k", "--limit", "3", "--out", out, "--cache", tmp_path / "c.sqlite",
                "--executor", "openai-batch", "--base-url", server.base_url, "-m", "gpt-4o-mini",
                "--batch-dir", batch, "--price-input", "2", "--price-output", "8")
        first = cli(*args, env={"OPENAI_API_KEY": KEY})
        assert first.returncode == 0, first.stderr
        assert "submitted" in first.stderr and "rerun" in first.stderr and not out.exists()
        second = cli(*args, env={"OPENAI_API_KEY": KEY})
        assert second.returncode == 0, second.stderr
        verdicts = read_records(out, Verdict)
        assert len(verdicts) == 3 and {v.status for v in verdicts} == {"ok"}
        assert "50% of the online price" in second.stderr
        assert server.calls("POST", "/v1/batches") == 1  # the rerun collected, it did not submit again
        third = cli(*args, env={"OPENAI_API_KEY": KEY})
        assert third.returncode == 0 and "nothing new to write" in third.stderr
        assert server.calls("POST", "/v1/batches") == 1
    for run in (first, second, third):
        assert KEY not in run.stdout + run.stderr
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path
