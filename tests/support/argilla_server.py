"""REST helpers for tests against a real local Argilla 2.8 server (``quantmedic.annotate.server``).

Annotators get HTTP 403 from the SDK's record endpoints (``/api/v1/datasets/{id}/records``), so
they work as the web UI does, through the ``/me`` endpoints with a bearer token::

    tok = token(argilla.url, annotator.username, annotator.password)
    records = annotator_records(argilla.url, tok, dataset_id)          # records assigned to me
    submit_response(argilla.url, tok, records[0]["id"],
                    {"verdict": "incorrect", "confidence": 4, "comment": "step 2 is wrong",
                     "error_span": [{"label": "arithmetic", "start": 0, "end": 7}]})

Response values go over the wire as ``{"question": {"value": V}}``; the helpers take the plain
``{"question": V}`` and wrap it. V is a string for a label or text question, a list of strings
for multi-label, an int for rating, ``[{"value": str, "rank": int}]`` for ranking and
``[{"label": str, "start": int, "end": int}]`` (character offsets into the field) for span.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

TIMEOUT = 30.0


def _check(response: httpx.Response) -> Any:
    if response.is_error:
        raise AssertionError(f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    return response.json() if response.content else None


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wrap_values(values: Mapping[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    """``{"q": v}`` -> ``{"q": {"value": v}}`` (already wrapped values pass through)."""
    if values is None:
        return None
    return {name: v if isinstance(v, dict) and set(v) == {"value"} else {"value": v} for name, v in values.items()}


def token(url: str, username: str, password: str) -> str:
    """``POST /api/v1/token`` (form-encoded username/password) -> a bearer access token."""
    body = _check(httpx.post(f"{url}/api/v1/token", data={"username": username, "password": password}, timeout=TIMEOUT))
    return body["access_token"]


def me(url: str, token: str) -> dict:
    return _check(httpx.get(f"{url}/api/v1/me", headers=_auth(token), timeout=TIMEOUT))


def my_datasets(url: str, token: str) -> list[dict]:
    return _check(httpx.get(f"{url}/api/v1/me/datasets", headers=_auth(token), timeout=TIMEOUT))["items"]


def annotator_records(
    url: str,
    token: str,
    dataset_id: str,
    *,
    filters: Iterable[dict] = (),
    include: Iterable[str] = ("responses", "suggestions"),
    page_size: int = 100,
) -> list[dict]:
    """All records of a dataset the user can see, via ``POST /api/v1/me/datasets/{id}/records/search``
    (the search engine answers it). ``filters`` are ``{"type": "terms", "scope": ..., "values": [...]}``
    items, e.g. :func:`response_status_filter`. Responses in the result are the user's own."""
    body: dict[str, Any] = {}
    if filters := list(filters):
        body["filters"] = {"and": filters}
    records, offset = [], 0
    while True:
        params = [("include", key) for key in include] + [("offset", offset), ("limit", page_size)]
        page = _check(httpx.post(f"{url}/api/v1/me/datasets/{dataset_id}/records/search", json=body,
                                 params=params, headers=_auth(token), timeout=TIMEOUT))
        records += [item["record"] for item in page["items"]]
        offset += page_size
        if offset >= page["total"] or not page["items"]:
            return records


def response_status_filter(*statuses: str) -> dict:
    """My responses with these statuses ("pending" = not answered by me yet)."""
    return {"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": list(statuses)}


def suggestion_value_filter(question: str, *values: str) -> dict:
    return {"type": "terms", "scope": {"entity": "suggestion", "question": question, "property": "value"},
            "values": list(values)}


def submit_response(
    url: str, token: str, record_id: str, values: Mapping[str, Any] | None, status: str = "submitted"
) -> dict:
    """``POST /api/v1/records/{id}/responses`` with ``{"values": {...}, "status": status}``; status is
    "submitted" (all required questions answered), "draft" or "discarded" (values may be None).
    A second response by the same user to the same record is a 409: use :func:`update_response`
    or :func:`save_responses`."""
    body = {"values": wrap_values(values), "status": status}
    return _check(httpx.post(f"{url}/api/v1/records/{record_id}/responses", json=body, headers=_auth(token),
                             timeout=TIMEOUT))


def update_response(
    url: str, token: str, response_id: str, values: Mapping[str, Any] | None, status: str = "submitted"
) -> dict:
    """``PUT /api/v1/responses/{id}`` (e.g. a draft that becomes submitted)."""
    body = {"values": wrap_values(values), "status": status}
    return _check(httpx.put(f"{url}/api/v1/responses/{response_id}", json=body, headers=_auth(token), timeout=TIMEOUT))


def save_responses(url: str, token: str, items: Iterable[tuple[str, Mapping[str, Any] | None, str]]) -> list[dict]:
    """Upsert ``(record_id, values, status)`` items via ``POST /api/v1/me/responses/bulk``; returns
    one ``{"item": response}`` or ``{"error": {"detail": ...}}`` per item."""
    body = {"items": [{"record_id": str(r), "values": wrap_values(v), "status": s} for r, v, s in items]}
    return _check(httpx.post(f"{url}/api/v1/me/responses/bulk", json=body, headers=_auth(token),
                             timeout=TIMEOUT))["items"]


def delete_suggestion(url: str, api_key: str, suggestion_id: str) -> dict:
    """``DELETE /api/v1/suggestions/{id}`` as an owner or admin (the SDK has no call for it)."""
    return _check(httpx.delete(f"{url}/api/v1/suggestions/{suggestion_id}", headers={"X-Argilla-Api-Key": api_key},
                               timeout=TIMEOUT))


def record_suggestions(url: str, api_key: str, record_id: str) -> list[dict]:
    """``GET /api/v1/records/{id}/suggestions`` as an owner or admin."""
    return _check(httpx.get(f"{url}/api/v1/records/{record_id}/suggestions", headers={"X-Argilla-Api-Key": api_key},
                            timeout=TIMEOUT))["items"]
