"""``quantmedic grade`` resumes: graded attempts go to ``--out`` as they come, a run killed with
``kill -9`` half way loses none of them, and the rerun grades only the rest (``kept N``), then
leaves the input's attempts in its order. The grading is real (math-verify on the shipped GSM8K
model solutions); the kill is a real SIGKILL to the command's process group."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from quantmedic.judge.adapters import load_attempts
from quantmedic.pipelines.data import shipped_path
from quantmedic.pipelines.evaluation.graded_file import grade_into
from quantmedic.taxonomy.jsonl import dump_line, read_records, write_records
from quantmedic.taxonomy.records import Attempt

from .test_cli_judge import cli


def complete_lines(path: Path) -> list[bytes]:
    data = path.read_bytes() if path.exists() else b""
    return data.split(b"\n")[:-1]


def test_a_grade_killed_half_way_resumes_and_loses_nothing(tmp_path):
    out = tmp_path / "graded.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "quantmedic.pipelines.cli", "grade", "gsm8k-solutions", "--out",
                                str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, env={**os.environ, "COLUMNS": "200"})
    deadline = time.monotonic() + 120
    while len(complete_lines(out)) < 300 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = complete_lines(out)
    assert 300 <= len(before) < 2638, "the run was not killed half way"

    result = cli("grade", "gsm8k-solutions", "--out", out)
    assert result.returncode == 0, result.stderr
    kept = int(re.search(r"kept (\d+) attempts already graded", result.stderr).group(1))
    assert kept == len({Attempt.model_validate_json(line).id for line in before})  # none of them graded again
    after = out.read_bytes().split(b"\n")
    assert set(before) <= set(after)  # what was written before the kill is there, byte for byte
    graded = read_records(out, Attempt)
    labelled = load_attempts(shipped_path("gsm8k-solutions"))
    assert [a.id for a in graded] == [a.id for a in labelled]  # every attempt once, in the input's order
    assert [a.correct for a in graded] == [a.correct for a in labelled]  # the authors' labels (2638 of 2638 agree)
    rerun = cli("grade", "gsm8k-solutions", "--out", out)
    assert rerun.returncode == 0 and "kept 2638 attempts already graded" in rerun.stderr


def test_a_line_torn_by_a_crash_is_graded_again_and_the_rest_is_kept(tmp_path):
    attempts = load_attempts(shipped_path("gsm8k-solutions"))[:6]
    out = tmp_path / "graded.jsonl"
    first = grade_into(attempts[:3], tmp_path / "first.jsonl", workers=1).graded
    out.write_text(dump_line(first[2]) + dump_line(first[0]) + dump_line(first[1])[:40])  # any order, a torn tail
    run = grade_into(attempts, out, workers=1)
    assert run.kept == 2
    assert [a.id for a in read_records(out, Attempt)] == [a.id for a in attempts]
    assert read_records(out, Attempt)[:3] == first


def test_grading_an_already_graded_input_into_a_new_file_replaces_its_grades(tmp_path):
    attempts = load_attempts(shipped_path("gsm8k-solutions"))[:2]
    stale = [a.model_copy(update={"correct": not a.correct, "grading": "by hand"}) for a in attempts]
    write_records(tmp_path / "in.jsonl", stale)
    result = cli("grade", tmp_path / "in.jsonl", "--out", tmp_path / "out.jsonl")
    assert result.returncode == 0, result.stderr
    assert [a.correct for a in read_records(tmp_path / "out.jsonl", Attempt)] == [a.correct for a in attempts]


def test_ctrl_c_at_any_moment_is_one_line_and_no_traceback(tmp_path):
    """Ctrl-C while the command loads, while the fork server and workers start, and while grading (the
    signal goes to the whole process group, as a terminal sends it): exit 130, no traceback from any process."""
    out = tmp_path / "graded.jsonl"
    for delay in (0.4, 1.6, 2.4, 3.2, 4.5):
        process = subprocess.Popen([sys.executable, "-m", "quantmedic.pipelines.cli", "grade", "gsm8k-solutions",
                                    "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True, env={**os.environ, "COLUMNS": "200"})
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode in (0, 130) and "Traceback" not in stderr and "Error" not in stderr, (delay, stderr)
        if process.returncode == 130 and "grading" in stderr:
            assert stderr.strip().splitlines()[-1].startswith("interrupted: "), stderr
