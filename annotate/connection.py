"""Connecting to Argilla with one-line errors that say what to do."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


class AnnotateError(RuntimeError):
    """An Argilla problem the user can fix (unreachable server, wrong key, missing workspace...)."""


@dataclass(frozen=True)
class ArgillaTarget:
    """Where the dataset lives. The API key is never part of the repr."""

    api_url: str
    api_key: str = field(repr=False)
    workspace: str | None = None

    @classmethod
    def from_options(cls, api_url: str | None, api_key: str | None, workspace: str | None) -> "ArgillaTarget":
        url = api_url or os.environ.get("ARGILLA_API_URL")
        key = api_key or os.environ.get("ARGILLA_API_KEY")
        if not url:
            raise AnnotateError("no Argilla server: pass --api-url or set ARGILLA_API_URL "
                                "(`quantmedic annotate serve` starts a local one)")
        if not key:
            raise AnnotateError("no Argilla API key: pass --api-key or set ARGILLA_API_KEY")
        return cls(url.rstrip("/"), key, workspace)


def connect(target: ArgillaTarget):
    """An ``argilla.Argilla`` client, after checking the server answers and accepts the key."""
    import argilla as rg
    import httpx
    from argilla._exceptions import ArgillaCredentialsError

    try:
        return rg.Argilla(api_url=target.api_url, api_key=target.api_key, timeout=60, retries=1)
    except ArgillaCredentialsError:
        raise AnnotateError(f"Argilla at {target.api_url} refused the API key (401): check --api-key / "
                            "ARGILLA_API_KEY") from None
    except (httpx.ConnectError, httpx.TimeoutException, httpx.RemoteProtocolError) as error:
        raise AnnotateError(f"cannot reach Argilla at {target.api_url} ({type(error).__name__}): is the server "
                            "running? `quantmedic annotate serve` starts a local one") from None


def workspace(client, target: ArgillaTarget):
    """The target workspace (the user's only one when none is named)."""
    available = [w.name for w in client.workspaces]
    name = target.workspace
    if name is None:
        if len(available) == 1:
            return client.workspaces(available[0])
        raise AnnotateError(f"name the workspace with --workspace (available: {', '.join(available) or 'none'})")
    found = client.workspaces(name)
    if found is None:
        raise AnnotateError(f'workspace "{name}" does not exist on {target.api_url}; available: '
                            f"{', '.join(available) or 'none'} (an owner creates workspaces)")
    return found


def find_dataset(client, target: ArgillaTarget, name: str):
    ws = workspace(client, target)
    dataset = client.datasets(name, workspace=ws)
    if dataset is None:
        raise AnnotateError(f'no dataset "{name}" in workspace "{ws.name}" on {target.api_url}; push verdicts '
                            "with `quantmedic annotate push` first")
    return dataset
