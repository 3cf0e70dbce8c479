"""Shared fixtures. Servers run for real on 127.0.0.1; the fault server is the only fake, and it
exists to inject faults (429, 5xx, hangs, broken JSON) that real servers do not produce on demand.

Tests that need a real LLM server or a fresh virtual environment are marked ``slow``. They skip
when their server cannot be started here, unless QUANTMEDIC_REQUIRE_SERVERS=1 or CI=true (as in
.ci/run), in which case a missing server is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quantmedic.judge.cache import ResponseCache
from quantmedic.judge.embedded import EmbeddedJudgeUnavailable, embedded_judge
from quantmedic.pipelines.data import shipped_path

from .support.servers import fault_server

REQUIRE_SERVERS = os.environ.get("QUANTMEDIC_REQUIRE_SERVERS") == "1" or os.environ.get("CI") == "true"
REPO = Path(__file__).resolve().parents[1]


def unavailable(reason: str):
    if REQUIRE_SERVERS:
        pytest.fail(f"required test server unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's answer cache."""
    monkeypatch.setenv("QUANTMEDIC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def fault():
    with fault_server() as server:
        yield server


@pytest.fixture
def faults(fault):
    """The shared fault server with an empty fault script and request log."""
    fault.script([])
    return fault


@pytest.fixture
def cache(tmp_path):
    with ResponseCache(tmp_path / "answers.sqlite") as store:
        yield store


@pytest.fixture(scope="session")
def llama_endpoint():
    """The real embedded judge: llama.cpp's server with SmolLM2-135M-Instruct."""
    try:
        with embedded_judge() as endpoint:
            yield endpoint
    except EmbeddedJudgeUnavailable as error:
        unavailable(str(error))


@pytest.fixture(scope="session")
def vllm_endpoint():
    """A real vLLM server (CPU build, own venv) serving an HF-format copy of SmolLM2-135M-Instruct."""
    from quantmedic.judge.backend import Endpoint
    from quantmedic.judge.embedded import find_gguf

    from .support.vllm_server import VLLMServerError, ensure_hf_model, vllm_server

    python = Path(os.environ.get("QUANTMEDIC_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
    if not python.exists():
        unavailable(f"no vLLM environment at {python} (scripts/setup-test-env.sh makes it)")
    try:
        model_dir = ensure_hf_model(str(python), str(find_gguf()), str(REPO / ".cache" / "smollm2-hf"))
        with vllm_server(str(python), model_dir) as base_url:
            yield Endpoint(base_url=base_url, model="local", identity=f"vllm-test|{base_url}")
    except (VLLMServerError, EmbeddedJudgeUnavailable) as error:
        unavailable(f"vLLM server: {error}")


@pytest.fixture
def eval_cli():
    """The `grade` and `compare` commands on a throwaway typer app, invoked in-process."""
    import typer
    from typer.testing import CliRunner

    from quantmedic.pipelines.cli.evaluation import commands

    app = typer.Typer()
    commands.register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="session")
def gsm8k_solutions() -> Path:
    return shipped_path("gsm8k-solutions")


@pytest.fixture(scope="session")
def processbench() -> Path:
    return shipped_path("processbench-gsm8k")


@pytest.fixture(scope="session")
def argilla(tmp_path_factory):
    """A real local Argilla 2.8 server (argilla-server + osmem + redis, see
    quantmedic.annotate.server) with an owner and two annotators in one workspace.

    The server's own venv is $QUANTMEDIC_ARGILLA_PYTHON, else REPO/.venv-argilla (made by
    scripts/setup-test-env.sh), else ~/.cache/quantmedic/argilla-venv."""
    from quantmedic.annotate.server import ArgillaServerError, find_redis_server, find_server_python, local_argilla

    python = os.environ.get("QUANTMEDIC_ARGILLA_PYTHON")
    if not python and (REPO / ".venv-argilla" / "bin" / "python").exists():
        python = str(REPO / ".venv-argilla" / "bin" / "python")
    try:
        python = str(find_server_python(python))
        find_redis_server()
    except ArgillaServerError as error:
        unavailable(str(error))
    try:
        with local_argilla(tmp_path_factory.mktemp("argilla"), python=python, annotators=2) as server:
            yield server
    except ArgillaServerError as error:
        unavailable(f"local Argilla server: {error}")
