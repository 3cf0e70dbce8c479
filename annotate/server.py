"""A local Argilla 2.8 server without Docker, for annotators on a laptop and for the tests.

    from quantmedic.annotate.server import local_argilla, serve

    with local_argilla(Path("~/argilla").expanduser()) as argilla:    # a LocalArgilla
        client = argilla.owner_client()                               # argilla SDK, as the owner
        ...
    serve(Path("~/argilla").expanduser())       # prints URL + credentials, blocks until Ctrl-C

It runs three processes, each in its own process group, all stopped on exit:

* Debian's ``redis-server`` (no persistence, bound to 127.0.0.1);
* ``osmem-server``, an in-memory OpenSearch-compatible server, as the search engine;
* ``argilla-server==2.8.0`` on SQLite (``HOME/argilla.db``), with the search-engine subclass of
  ``argilla_plugin/osmem_engine.py`` (osmem runs no update scripts and no knn queries).

argilla-server needs ``click<8.2``, so it lives in its OWN virtual environment (see
``install_server_env``); this module only starts processes and never imports argilla.

The SQLite database and the accounts (``HOME/accounts.json``, mode 0600) persist in ``home``: a
second start with the same home reuses them and rebuilds osmem's index from the database
(``search-engine reindex``). Logs: ``HOME/logs/{redis,osmem,setup,argilla,worker}.log``.

Measured on 2 shared cores: ready (first /api/v1/status answer) in ~13 s from a fresh home
(~8 s set-up process: migration + accounts, ~5 s server start-up), ~9-10 s on a restart; stopping
takes <0.5 s; ~0.31 GB RSS in all (argilla-server ~280 MB, osmem ~20 MB, redis ~12 MB).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from quantmedic.taxonomy.local_server import LocalServer, log_tail, port_in_use, reserve_port, start_server

SERVER_PACKAGES = ("argilla-server==2.8.0", "argilla==2.8.0", "osmem-server==0.1.6", "click<8.2")
DEFAULT_VENV = Path.home() / ".cache" / "quantmedic" / "argilla-venv"
PYTHON_ENV_VAR = "QUANTMEDIC_ARGILLA_PYTHON"
PLUGIN_DIR = Path(__file__).resolve().parent / "argilla_plugin"
ENGINE_NAME = "osmem"  # registered by argilla_plugin/osmem_engine.py
DEFAULT_WORKSPACE = "quantmedic"

# Every argilla_server command runs through this launcher (``python LAUNCHER args...``, with the
# argilla-server venv's python), so the osmem engine is registered first; see its docstring.
LAUNCHER = PLUGIN_DIR / "launcher.py"


class ArgillaServerError(RuntimeError):
    """The local Argilla server cannot start (missing environment or a process failed)."""


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    api_key: str
    role: str = "annotator"  # "owner" or "annotator"


@dataclass(frozen=True)
class LocalArgilla:
    """A running local Argilla server and its accounts."""

    url: str  # e.g. "http://127.0.0.1:6900"; the web UI is served at "/"
    workspace: str
    owner: Account
    annotators: tuple[Account, ...]
    home: Path
    search_engine_url: str = ""
    redis_url: str = ""
    server_python: str = ""  # the argilla-server venv's python

    @property
    def accounts(self) -> tuple[Account, ...]:
        return (self.owner, *self.annotators)

    def owner_client(self):
        """An ``argilla.Argilla`` SDK client for the owner (needs ``pip install argilla==2.8.0``)."""
        import argilla as rg

        return rg.Argilla(api_url=self.url, api_key=self.owner.api_key)


# --------------------------------------------------------------------------------------------
# environment


def install_server_env(path: Path | str = DEFAULT_VENV, *, base_python: str | None = None, quiet: bool = True) -> Path:
    """Create a virtual environment at ``path`` with argilla-server and osmem; return its python.

    Idempotent: does nothing when the packages already import there. Takes ~90 s."""
    path = Path(path).expanduser()
    python = path / "bin" / "python"
    if python.exists() and _env_ready(python):
        return python
    if not python.exists():
        subprocess.run([base_python or sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *(["-q"] if quiet else [])]
    subprocess.run([*pip, *SERVER_PACKAGES], check=True)
    return python


def _env_ready(python: Path) -> bool:
    probe = "import argilla_server, argilla, osmem_server"
    return subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0


def find_server_python(python: str | os.PathLike | None = None) -> Path:
    """The argilla-server venv's python: argument, $QUANTMEDIC_ARGILLA_PYTHON, then the default venv."""
    candidate = Path(python or os.environ.get(PYTHON_ENV_VAR) or DEFAULT_VENV / "bin" / "python").expanduser()
    if not candidate.exists():
        raise ArgillaServerError(
            f"no Argilla server environment at {candidate}. argilla-server 2.8 needs click<8.2, so it "
            f"lives in its own venv: create it with `python -m quantmedic.annotate.server --install` or\n"
            f"  python -m venv {DEFAULT_VENV} && {DEFAULT_VENV}/bin/pip install "
            + " ".join(f'"{p}"' for p in SERVER_PACKAGES)
            + f"\nor point ${PYTHON_ENV_VAR} at the python of an existing one"
        )
    return candidate


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise ArgillaServerError("redis-server is not on PATH; install it with: apt-get install redis-server")
    return found


# --------------------------------------------------------------------------------------------
# processes


def _start(cmd: Sequence[str], log: Path, name: str, env: Mapping[str, str] | None = None) -> LocalServer:
    """Start ``cmd`` in its own process group; it gets SIGTERM if the thread that started it dies."""
    return start_server(cmd, log, name=name, env=env, death_signal=signal.SIGTERM)


def _run(cmd: Sequence[str], log: Path, env: Mapping[str, str], what: str, timeout: float = 300) -> None:
    server = _start(cmd, log, what, env)
    try:
        code = server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        server.stop()
        raise ArgillaServerError(f"{what} took more than {timeout:.0f} s (log {log}):\n{log_tail(log)}") from None
    if code != 0:
        raise ArgillaServerError(f"{what} failed with exit code {code} (log {log}):\n{log_tail(log)}")


def _redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _osmem_url(log: Path) -> str | None:
    """osmem prints one JSON line with its URL once it listens (we start it on port 0)."""
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and "url" in message:
                    return message["url"]
    return None


# --------------------------------------------------------------------------------------------
# accounts


def _new_account(username: str, role: str) -> Account:
    return Account(username, secrets.token_urlsafe(12), "argilla." + secrets.token_urlsafe(24), role)


def _accounts(home: Path, owner: Account | str, annotators: int | Sequence[Account | str]) -> list[Account]:
    """Fixed accounts as given; named ones reuse HOME/accounts.json when present, else random."""
    saved = {}
    store = home / "accounts.json"
    if store.exists():
        saved = {a["username"]: Account(**a) for a in json.loads(store.read_text())}
    names = [f"annotator{i}" for i in range(1, annotators + 1)] if isinstance(annotators, int) else annotators
    wanted = [(owner, "owner"), *((a, "annotator") for a in names)]
    accounts = []
    for spec, role in wanted:
        if isinstance(spec, Account):
            accounts.append(Account(spec.username, spec.password, spec.api_key, role))
        elif spec in saved and saved[spec].role == role:
            accounts.append(saved[spec])
        else:
            accounts.append(_new_account(spec, role))
    store.write_text(json.dumps([asdict(a) for a in accounts], indent=2))
    store.chmod(0o600)
    return accounts


# --------------------------------------------------------------------------------------------
# the server


@contextlib.contextmanager
def local_argilla(
    home: Path | str,
    *,
    python: str | os.PathLike | None = None,
    port: int | None = None,
    annotators: int | Sequence[Account | str] = 2,
    owner: Account | str = "owner",
    workspace: str = DEFAULT_WORKSPACE,
    worker: bool = False,
    startup_timeout: float = 180.0,
) -> Iterator[LocalArgilla]:
    """Start redis, osmem and argilla-server for ``home``; yield a LocalArgilla; stop them all.

    ``annotators``: a number (accounts ``annotator1``..N) or usernames / fixed ``Account`` s.
    Passwords and API keys are random (``secrets``) unless given as ``Account`` s; they are
    kept in ``HOME/accounts.json`` and reused on the next start with the same home.
    ``worker=True`` also starts the rq worker, needed only for background jobs (changing a
    dataset's distribution after records exist, Hub import/export, webhooks).
    """
    server_python = find_server_python(python)
    redis_server = find_redis_server()
    if not (PLUGIN_DIR / "osmem_engine.py").exists():
        raise ArgillaServerError(f"the osmem search-engine plugin is missing from {PLUGIN_DIR}")
    home = Path(home).expanduser().resolve()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    restarted = (home / "argilla.db").exists()
    accounts = _accounts(home, owner, annotators)
    if port and port_in_use(port):
        raise ArgillaServerError(f"port {port} is already in use on 127.0.0.1")
    port = port or reserve_port()
    url = f"http://127.0.0.1:{port}"

    with contextlib.ExitStack() as processes:  # stopped in reverse order, whatever happens
        env = _start_redis_and_osmem(processes, home, redis_server, server_python)
        argilla = [str(server_python), str(LAUNCHER)]
        setup = _setup_commands(accounts, workspace, restarted)
        _run([*argilla, "--batch"], logs / "setup.log", {**env, "QUANTMEDIC_ARGILLA_BATCH": json.dumps(setup)},
             "argilla-server set-up (database migrate, users create, search-engine reindex)")

        server = processes.enter_context(_start([*argilla, "start", "--host", "127.0.0.1", "--port", str(port)],
                                                logs / "argilla.log", "argilla-server", env))
        if worker:
            processes.enter_context(_start([*argilla, "worker", "--num-workers", "1"], logs / "worker.log",
                                           "argilla-server worker", env))
        server.wait_until_ready(f"{url}/api/v1/status", startup_timeout, error=ArgillaServerError)

        yield LocalArgilla(
            url=url, workspace=workspace, owner=accounts[0], annotators=tuple(accounts[1:]), home=home,
            search_engine_url=env["ARGILLA_ELASTICSEARCH"], redis_url=env["ARGILLA_REDIS_URL"],
            server_python=str(server_python),
        )


def _setup_commands(accounts: Sequence[Account], workspace: str, restarted: bool) -> list[list[str]]:
    """The argilla_server commands run before the server starts (in one interpreter: ``--batch``)."""
    setup = [["database", "migrate"]]
    setup += [["database", "users", "create", "--first-name", a.username, "--username", a.username,
               "--password", a.password, "--api-key", a.api_key, "--role", a.role, "--workspace", workspace]
              for a in accounts]  # an existing username is skipped
    if restarted:  # osmem starts empty: rebuild the indexes of the datasets in the database
        setup.append(["search-engine", "reindex"])
    return setup


def _start_redis_and_osmem(processes: contextlib.ExitStack, home: Path, redis_server: str,
                           server_python: Path) -> dict[str, str]:
    """Start redis and osmem (stopped when ``processes`` closes); return argilla-server's environment."""
    logs = home / "logs"
    redis_port = reserve_port()
    redis = processes.enter_context(_start(
        [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(home), "--daemonize", "no", "--protected-mode", "yes"],
        logs / "redis.log", "redis-server",
    ))
    osmem_bin = subprocess.run(
        [str(server_python), "-c", "import osmem_server; print(osmem_server.resolve_binary())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    (logs / "osmem.log").unlink(missing_ok=True)
    osmem = processes.enter_context(_start(
        [osmem_bin, "--addr", "127.0.0.1:0", "--no-stdin-watch", "--parent-pid", str(os.getpid())],
        logs / "osmem.log", "osmem-server",
    ))
    osmem.wait_until_ready(lambda: _osmem_url(osmem.log) is not None, 30, error=ArgillaServerError)
    redis.wait_until_ready(lambda: _redis_ready(redis_port), 30, error=ArgillaServerError)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGIN_DIR), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "QUANTMEDIC_PARENT_PID": str(os.getpid()),
        "ARGILLA_HOME_PATH": str(home),
        "ARGILLA_DATABASE_URL": f"sqlite+aiosqlite:///{home / 'argilla.db'}?check_same_thread=False",
        "ARGILLA_SEARCH_ENGINE": ENGINE_NAME,
        "ARGILLA_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "ARGILLA_AUTH_SECRET_KEY": _secret_key(home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "ARGILLA_ELASTICSEARCH": _osmem_url(osmem.log) or "",
    }


def _secret_key(home: Path) -> str:
    """The JWT signing key, kept in HOME so that UI sessions survive a restart."""
    path = home / "auth_secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def serve(home: Path | str, *, console=None, **options) -> None:
    """Run ``local_argilla(home, **options)``, print the URL and every account, block until
    Ctrl-C or SIGTERM, then stop everything."""
    from rich.console import Console
    from rich.table import Table

    def interrupt(*_):
        raise KeyboardInterrupt

    console = console or Console()
    in_main_thread = threading.current_thread() is threading.main_thread()
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            with console.status("starting redis, osmem and argilla-server..."):
                argilla = stack.enter_context(local_argilla(home, **options))
            table = Table(title=f"Argilla at {argilla.url}  (workspace {argilla.workspace!r})")
            for column in ("role", "username", "password", "API key"):
                table.add_column(column, overflow="fold")  # never truncate a password or key
            for account in argilla.accounts:
                table.add_row(account.role, account.username, account.password, account.api_key)
            console.print(table)
            console.print(
                f"ready in {time.monotonic() - started:.0f} s: open [bold]{argilla.url}[/] in a browser; annotators "
                f"log in with username and password (also in {argilla.home / 'accounts.json'}).", soft_wrap=True,
            )
            console.print("Press Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                console.print("stopping...")
        console.print("stopped.")
    except KeyboardInterrupt:  # during start-up: local_argilla has already stopped what it started
        console.print("interrupted during start-up; stopped.")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
