"""One writer per output: a second process that would write the same output stops at once with one
line, and a lock dies with its holder (kill -9 included), so a rerun is never blocked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from quantmedic.taxonomy.locks import OutputLocked, exclusive_output, lock_path

from .conftest import REPO

HOLD = textwrap.dedent("""
    import sys, time
    from quantmedic.taxonomy.locks import exclusive_output
    with exclusive_output(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path, monkeypatch):
    """A child process holding the lock of an output, until it is killed."""
    monkeypatch.setenv("QUANTMEDIC_LOCK_DIR", str(tmp_path / "locks"))
    children = []

    def hold(output):
        child = subprocess.Popen([sys.executable, "-c", HOLD, str(output)], stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "QUANTMEDIC_LOCK_DIR": str(tmp_path / "locks")})
        assert child.stdout.readline().strip() == "held"
        children.append(child)
        return child

    yield hold
    for child in children:
        child.kill()
        child.wait()


def test_a_second_writer_is_refused_and_the_lock_dies_with_its_holder(holder, tmp_path):
    out = tmp_path / "verdicts.jsonl"
    child = holder(out)
    with pytest.raises(OutputLocked, match=rf"pid {child.pid}"):
        with exclusive_output(out):
            pass
    with exclusive_output(tmp_path / "other.jsonl"):  # another output is not blocked
        pass
    child.send_signal(signal.SIGKILL)
    child.wait()
    with exclusive_output(out):  # the kernel released it
        assert lock_path(out).is_file() and not (tmp_path / "verdicts.jsonl.lock").exists()


def test_a_second_study_run_on_the_same_folder_exits_1_with_one_line(holder, tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "state.json").write_text("{}\n")
    holder(folder)
    before = sorted(p.name for p in folder.iterdir())
    run = subprocess.run([sys.executable, "-m", "quantmedic.pipelines.cli", "run", str(REPO / "examples" / "cpu-study.yaml"),
                          "--out", str(folder)], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**os.environ, "COLUMNS": "80", "QUANTMEDIC_LOCK_DIR": str(tmp_path / "locks")})
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "being written by pid" in lines[0] and "Traceback" not in run.stderr
    assert sorted(p.name for p in folder.iterdir()) == before and (folder / "state.json").read_text() == "{}\n"


def test_two_judges_on_one_out_the_second_exits_1_and_no_verdict_is_lost(tmp_path):
    """The first `quantmedic judge` holds --out while it works (a slow real HTTP server answers); a second
    one on the same --out stops at once with one line; the first writes all its verdicts."""
    from .support.servers import fault_server

    out, env = tmp_path / "verdicts.jsonl", {**os.environ, "COLUMNS": "80", "QUANTMEDIC_LOCK_DIR": str(tmp_path / "l")}
    with fault_server("--latency", "0.5", "--slots", "1") as slow:
        slow.script([])
        args = [sys.executable, "-m", "quantmedic.pipelines.cli", "judge", "gsm8k-solutions", "--limit", "6",
                "--base-url", slow.base_url, "--model", "fault", "--concurrency", "1", "--out", str(out),
                "--cache", str(tmp_path / "c.sqlite")]
        first = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        deadline = time.monotonic() + 60
        while not slow.requests() and time.monotonic() < deadline:  # the first is judging
            time.sleep(0.1)
        second = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
        first_err = first.communicate(timeout=120)[1]
    assert second.returncode == 1 and "being written by pid" in second.stderr, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    assert first.returncode == 0, first_err
    assert len(out.read_text().splitlines()) == 6
