"""Starting and talking to the servers the tests use, all on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from quantmedic.taxonomy.local_server import reserve_port, start_server

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
    port = reserve_port()
    fd, log = tempfile.mkstemp(prefix="fault-server-", suffix=".log")
    os.close(fd)
    try:
        with start_server([sys.executable, str(FAULT_SERVER), "--port", str(port), *args], log,
                          name="fault server", port=port) as child:
            child.wait_until_ready(f"http://127.0.0.1:{port}/v1/models", 30, interval=0.1)
            yield FaultServer(port)
    finally:
        os.unlink(log)
