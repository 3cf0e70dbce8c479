"""Atomic writes (``taxonomy.jsonl.write_atomic``, which every output file goes through): a new file
gets the mode ``open()`` would give it (0666 less the umask), a rewritten one keeps its own, and the
temporary file a writer killed mid-write leaves behind is removed by the next write of that file."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

from quantmedic.taxonomy.jsonl import remove_stale_temps, write_atomic


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_respects_the_umask_and_a_rewritten_one_keeps_its_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        assert mode(write_atomic(tmp_path / "a.jsonl", ["x\n"])) == 0o644
        os.umask(0o077)
        assert mode(write_atomic(tmp_path / "b.jsonl", ["x\n"])) == 0o600
        shared = tmp_path / "shared.jsonl"
        shared.write_text("old\n")
        shared.chmod(0o664)
        write_atomic(shared, ["new\n"])
        assert mode(shared) == 0o664 and shared.read_text() == "new\n"
    finally:
        os.umask(previous)


def test_the_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "verdicts.jsonl"
    writer = subprocess.Popen([sys.executable, "-c", "import sys, time; from quantmedic.taxonomy.jsonl import "
                               "write_atomic; write_atomic(sys.argv[1], ('x' for _ in iter(lambda: time.sleep(60), 1)))",
                               str(target)])
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".verdicts.jsonl.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert len(list(tmp_path.glob(".verdicts.jsonl.*.tmp"))) == 1
    write_atomic(target, ["done\n"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verdicts.jsonl"]


def test_a_temp_file_of_a_writer_still_running_is_left_alone(tmp_path):
    target = tmp_path / "out.jsonl"
    alive = tmp_path / f".out.jsonl.{os.getppid()}-abc123.tmp"  # our parent is alive: its write goes on
    other = tmp_path / ".other.jsonl.999999999-abc123.tmp"  # another file's temp is not ours to remove
    for path in (alive, other):
        path.write_text("partial")
    remove_stale_temps(target)
    assert alive.exists() and other.exists()
