"""The ``quantmedic judge`` command end to end, as a user runs it, against the fault-injecting
server (for scripted faults) and checking files, exit codes, resume and secrets."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time


from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import Verdict

from .support.servers import fault_server

SECRET = "sk-test-SECRET-4f9a1c"


def cli(*args, env=None, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantmedic.pipelines.cli", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout, **kwargs)


def test_judges_shipped_gsm8k_failures_and_keeps_the_key_secret(faults, tmp_path):
    out, cache = tmp_path / "verdicts.jsonl", tmp_path / "c.sqlite"
    result = cli("judge", "gsm8k-solutions", "--base-url", faults.base_url, "--model", "fault", "--limit", "12",
                 "--out", out, "--cache", cache, "--price-input", "2", "--price-output", "8",
                 env={"OPENAI_API_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    verdicts = read_records(out, Verdict)
    assert len(verdicts) == 12 and all(v.attempt.correct is False for v in verdicts)
    assert len({v.id for v in verdicts}) == 12
    assert "Judging summary" in result.stderr and "execution" in result.stderr
    assert "1028 correct" in result.stderr
    assert "0.0043" in result.stderr  # 12 * (100 * 2 + 20 * 8) / 1e6 USD
    requests = faults.requests()
    assert len(requests) == 12 and {r["authorization"] for r in requests} == {f"Bearer {SECRET}"}
    for blob in (result.stdout, result.stderr, out.read_text(), cache.read_bytes().decode("latin-1")):
        assert SECRET not in blob


def test_rerun_resumes_and_keeps_earlier_verdicts(faults, tmp_path):
    out, cache = tmp_path / "v.jsonl", tmp_path / "c.sqlite"
    base = ["judge", "processbench-gsm8k", "--base-url", faults.base_url, "-m", "fault", "--out", out,
            "--cache", cache]
    assert cli(*base, "--limit", "5").returncode == 0
    first = read_records(out, Verdict)
    faults.script([])
    result = cli(*base, "--limit", "8")
    assert result.returncode == 0, result.stderr
    assert len(faults.requests()) == 3  # only the 3 new items were sent
    second = read_records(out, Verdict)
    assert second[:5] == first and len(second) == 8
    # a run on another input keeps what the file already holds
    faults.script([])
    assert cli("judge", "gsm8k-solutions", "--base-url", faults.base_url, "-m", "fault", "--out", out,
               "--cache", cache, "--limit", "2").returncode == 0
    assert len(read_records(out, Verdict)) == 10


def test_sigkill_half_way_then_resume_loses_and_duplicates_nothing(tmp_path):
    out, cache = tmp_path / "v.jsonl", tmp_path / "c.sqlite"
    with fault_server("--latency", "0.15", "--slots", "4") as server:
        args = [sys.executable, "-m", "quantmedic.pipelines.cli", "judge", "gsm8k-solutions", "--base-url",
                server.base_url, "-m", "fault", "--limit", "60", "--concurrency", "4", "--out", str(out),
                "--cache", str(cache)]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if cache.exists():
                with sqlite3.connect(cache) as db:
                    try:
                        if db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] >= 20:
                            break
                    except sqlite3.OperationalError:
                        pass
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not out.exists()  # the output is written whole or not at all
        with sqlite3.connect(cache) as db:
            answered = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        assert 20 <= answered < 60
        server.script([])
        result = cli(*args[3:])
        assert result.returncode == 0, result.stderr
        assert len(server.requests()) == 60 - answered  # only what was missing
    verdicts = read_records(out, Verdict)
    assert len(verdicts) == 60 and len({v.id for v in verdicts}) == 60
    assert all(v.status == "ok" for v in verdicts)


def test_dry_run_sends_nothing(faults, tmp_path):
    result = cli("judge", "processbench-gsm8k", "--base-url", faults.base_url, "-m", "fault", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert '"type": "json_schema"' in result.stdout and '"computational_error"' in result.stdout
    assert "[Step 0]" in result.stdout and "numbered 0 to" in result.stdout
    assert faults.requests() == []


def test_malformed_input_exits_1_naming_file_line_field_and_writes_nothing(faults, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "p", "steps": ["a"], "label": -1}\n{"problem": "p", "steps": ["a", " "]}\n')
    out = tmp_path / "v.jsonl"
    result = cli("judge", bad, "--base-url", faults.base_url, "-m", "fault", "--out", out)
    assert result.returncode == 1
    assert f"{bad}:2" in result.stderr.replace("\n", "") and "steps.1" in result.stderr
    assert not out.exists() and faults.requests() == []


def test_broken_taxonomy_exits_1(faults, tmp_path):
    broken = tmp_path / "tax.yaml"
    broken.write_text("name: x\ncategories:\n  - id: only\n    name: Only\n    definition: d\n    example: e\n")
    result = cli("judge", "processbench-gsm8k", "--base-url", faults.base_url, "-m", "fault", "--out",
                 tmp_path / "v.jsonl", "--taxonomy", broken)
    assert result.returncode == 1 and "categories.0.subtypes" in result.stderr and f"{broken}:3" in result.stderr


def test_refused_key_exits_1_with_advice(faults, tmp_path):
    faults.script(["401"])
    result = cli("judge", "processbench-gsm8k", "--base-url", faults.base_url, "-m", "fault", "--limit", "1",
                 "--out", tmp_path / "v.jsonl")
    assert result.returncode == 1 and "401" in result.stderr and "API key" in result.stderr


def test_usage_errors_exit_2(tmp_path):
    result = cli("judge", "processbench-gsm8k", "--model", "x", "--out", tmp_path / "v.jsonl")
    assert result.returncode == 2 and "--base-url" in result.stderr


def test_help_explains(tmp_path):
    result = cli("judge", "--help")
    assert result.returncode == 0
    for word in ("--base-url", "--dry-run", "--limit", "--samples", "gsm8k-solutions", "unscored"):
        assert word in result.stdout


def test_taxonomy_and_schema_commands(tmp_path):
    result = cli("taxonomy")
    assert result.returncode == 0 and "conceptual_misunderstanding" in result.stdout
    copy = tmp_path / "mine.yaml"
    copy.write_text(result.stdout)
    assert "ok (quantmedic-default: 4 categories, 7 subtypes)" in cli("taxonomy", "--check", copy).stdout
    assert cli("schema", tmp_path / "schemas").returncode == 0
    assert json.loads((tmp_path / "schemas" / "verdict.schema.json").read_text())["title"] == "Verdict"
