"""Starting and talking to the servers the tests use, all on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from quantmedic.judge.embedded import free_port, stop_process_group

FAULT_SERVER = Path(__file__).with_name("fault_server.py")


class FaultServer:
    """Handle on a running fault-injecting server (see ``fault_server.py``)."""

    def __init__(self, port: int):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def _call(self, path: str, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def script(self, faults: list[str]) -> None:
        """Queue faults for the next requests (and clear the request log)."""
        self._call("/admin/faults", faults)

    def requests(self) -> list[dict]:
        return self._call("/admin/requests")


@contextmanager
def fault_server(*args: str) -> Iterator[FaultServer]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(FAULT_SERVER), "--port", str(port), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    server = FaultServer(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.script([])
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fault server did not start: {process.stderr.read().decode()[-2000:]}")
                time.sleep(0.1)
        yield server
    finally:
        stop_process_group(process)
