"""A real local Argilla 2.8 server (argilla-server on SQLite + osmem + Debian redis, no Docker):
the owner works through the argilla SDK, annotators through REST as the web UI does.

The osmem search-engine plugin is what makes annotator responses, suggestion deletes and
similarity search work (osmem runs no update scripts and no knn queries); the tests that go
through the search index after those writes are the ones that would fail without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from quantmedic.taxonomy.local_server import reserve_port

from .support.argilla_server import (
    annotator_records,
    delete_suggestion,
    record_suggestions,
    response_status_filter,
    save_responses,
    submit_response,
    suggestion_value_filter,
    token,
)

rg = pytest.importorskip("argilla", reason="the argilla SDK (pip install argilla==2.8.0) is the owner's client")

pytestmark = pytest.mark.slow

PROBLEM = "Tom has 3 apples and buys 4 more. How many apples does he have?"
SOLUTIONS = {"r1": "3 + 4 = 8. The answer is 8.", "r2": "3 + 4 = 7. The answer is 7."}


def _settings():
    return rg.Settings(
        fields=[rg.TextField(name="problem"), rg.TextField(name="solution")],
        questions=[
            rg.LabelQuestion(name="verdict", labels=["correct", "incorrect"]),
            rg.RatingQuestion(name="confidence", values=[1, 2, 3, 4, 5], required=False),
            rg.TextQuestion(name="comment", required=False),
            rg.SpanQuestion(name="error_span", field="solution", labels=["arithmetic", "logic"], required=False),
        ],
        vectors=[rg.VectorField(name="emb", dimensions=3)],
    )


def _records(text: dict[str, str] | None = None):
    text = text or SOLUTIONS
    return [
        rg.Record(
            id="r1",
            fields={"problem": PROBLEM, "solution": text["r1"]},
            suggestions=[rg.Suggestion(question_name="verdict", value="incorrect", score=0.9, agent="judge")],
            vectors={"emb": [1.0, 0.0, 0.0]},
        ),
        rg.Record(
            id="r2",
            fields={"problem": PROBLEM, "solution": text["r2"]},
            suggestions=[rg.Suggestion(question_name="verdict", value="correct", score=0.8, agent="judge")],
            vectors={"emb": [0.0, 1.0, 0.0]},
        ),
    ]


@pytest.fixture
def dataset(argilla):
    """A fresh dataset with two records r1 (wrong arithmetic) and r2, each with a suggestion."""
    client = argilla.owner_client()
    ds = rg.Dataset(name=f"test-{uuid.uuid4().hex[:8]}", workspace=argilla.workspace, settings=_settings(),
                    client=client)
    ds.create()
    ds.records.log(_records())
    yield ds
    ds.delete()


def _by_external_id(records):
    return {r["external_id"]: r for r in records}


def _owner_records(ds):
    return {r.id: r for r in ds.records(with_suggestions=True, with_responses=True)}


def test_annotator_submits_and_drafts_over_rest_owner_sees_them(argilla, dataset):
    annotator = argilla.annotators[0]
    tok = token(argilla.url, annotator.username, annotator.password)
    records = _by_external_id(annotator_records(argilla.url, tok, dataset.id))
    assert set(records) == {"r1", "r2"}
    assert [s["value"] for s in records["r1"]["suggestions"]] == ["incorrect"]

    submitted = submit_response(argilla.url, tok, records["r1"]["id"], {
        "verdict": "incorrect",
        "confidence": 4,
        "comment": "3 + 4 is 7, not 8",
        "error_span": [{"label": "arithmetic", "start": 0, "end": 9}],
    })
    assert submitted["status"] == "submitted"
    draft = submit_response(argilla.url, tok, records["r2"]["id"], {"verdict": "correct"}, status="draft")
    assert draft["status"] == "draft"

    # Both writes reached the search index (update_record_response): filter on my response status.
    mine = lambda *statuses: {r["external_id"] for r in annotator_records(  # noqa: E731
        argilla.url, tok, dataset.id, filters=[response_status_filter(*statuses)])}
    assert mine("submitted") == {"r1"}
    assert mine("draft") == {"r2"}
    assert mine("pending") == set()
    # The other annotator has answered nothing.
    other = argilla.annotators[1]
    other_tok = token(argilla.url, other.username, other.password)
    assert {r["external_id"] for r in annotator_records(
        argilla.url, other_tok, dataset.id, filters=[response_status_filter("pending")])} == {"r1", "r2"}

    owner_view = _owner_records(dataset)
    r1 = owner_view["r1"]
    assert [(v.value, v.status) for v in r1.responses["verdict"]] == [("incorrect", "submitted")]
    assert r1.responses["confidence"][0].value == 4
    assert r1.responses["comment"][0].value == "3 + 4 is 7, not 8"
    assert r1.responses["error_span"][0].value == [{"label": "arithmetic", "start": 0, "end": 9}]
    assert r1.status == "completed"  # min_submitted=1 by default
    assert [(v.value, v.status) for v in owner_view["r2"].responses["verdict"]] == [("correct", "draft")]
    assert owner_view["r2"].status == "pending"

    # A draft becomes a submission through the bulk upsert the UI uses.
    [result] = save_responses(argilla.url, tok, [(records["r2"]["id"], {"verdict": "correct"}, "submitted")])
    assert result["item"]["status"] == "submitted"
    assert mine("submitted") == {"r1", "r2"}


def test_concurrent_annotators_on_one_record_keep_both_responses(argilla, dataset):
    tokens = [token(argilla.url, a.username, a.password) for a in argilla.annotators]
    record_id = _by_external_id(annotator_records(argilla.url, tokens[0], dataset.id))["r1"]["id"]
    errors = []

    def answer(tok, verdict):
        try:
            submit_response(argilla.url, tok, record_id, {"verdict": verdict})
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=answer, args=(tok, v)) for tok, v in zip(tokens, ["incorrect", "correct"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for tok in tokens:  # each annotator's response is in the index, neither overwrote the other
        assert {r["external_id"] for r in annotator_records(
            argilla.url, tok, dataset.id, filters=[response_status_filter("submitted")])} == {"r1"}
    assert sorted(v.value for v in _owner_records(dataset)["r1"].responses["verdict"]) == ["correct", "incorrect"]


def test_deleting_a_suggestion(argilla, dataset):
    annotator = argilla.annotators[0]
    tok = token(argilla.url, annotator.username, annotator.password)
    r1 = _by_external_id(annotator_records(argilla.url, tok, dataset.id))["r1"]
    [suggestion] = record_suggestions(argilla.url, argilla.owner.api_key, r1["id"])
    flagged = lambda: {r["external_id"] for r in annotator_records(  # noqa: E731
        argilla.url, tok, dataset.id, filters=[suggestion_value_filter("verdict", "incorrect")])}
    assert flagged() == {"r1"}

    delete_suggestion(argilla.url, argilla.owner.api_key, suggestion["id"])

    assert record_suggestions(argilla.url, argilla.owner.api_key, r1["id"]) == []
    assert flagged() == set()  # gone from the search index too (delete_record_suggestion)
    assert _by_external_id(annotator_records(argilla.url, tok, dataset.id))["r1"]["suggestions"] == []
    assert len(_owner_records(dataset)["r2"].suggestions) == 1


def test_relogging_the_same_ids_updates_in_place(argilla, dataset):
    annotator = argilla.annotators[0]
    tok = token(argilla.url, annotator.username, annotator.password)
    r1_id = _by_external_id(annotator_records(argilla.url, tok, dataset.id))["r1"]["id"]
    submit_response(argilla.url, tok, r1_id, {"verdict": "incorrect"})

    dataset.records.log(_records({"r1": "3 + 4 = 9. The answer is 9.", "r2": SOLUTIONS["r2"]}))

    records = _by_external_id(annotator_records(argilla.url, tok, dataset.id))
    assert len(records) == 2 and records["r1"]["id"] == r1_id
    assert records["r1"]["fields"]["solution"] == "3 + 4 = 9. The answer is 9."
    assert {r["external_id"] for r in annotator_records(
        argilla.url, tok, dataset.id, filters=[response_status_filter("submitted")])} == {"r1"}
    owner_view = _owner_records(dataset)
    assert sorted(owner_view) == ["r1", "r2"]
    assert [v.value for v in owner_view["r1"].responses["verdict"]] == ["incorrect"]


def test_similarity_search(argilla, dataset):
    """Brute-force cosine in the osmem plugin, scored like OpenSearch's cosinesimil: (1 + cos) / 2."""
    query = [0.9, 0.1, 0.0]
    ranked = list(dataset.records(query=rg.Query(similar=rg.Similar(name="emb", value=query))))
    assert [record.id for record, _ in ranked] == ["r1", "r2"]
    norm = sum(x * x for x in query) ** 0.5
    assert [round(score, 4) for _, score in ranked] == [round((1 + 0.9 / norm) / 2, 4), round((1 + 0.1 / norm) / 2, 4)]
    least = list(dataset.records(query=rg.Query(similar=rg.Similar(name="emb", value=query, most_similar=False))))
    assert [record.id for record, _ in least] == ["r2", "r1"]


def test_annotators_are_refused_the_sdk_record_endpoints(argilla, dataset):
    response = httpx.get(f"{argilla.url}/api/v1/datasets/{dataset.id}/records",
                         headers={"X-Argilla-Api-Key": argilla.annotators[0].api_key})
    assert response.status_code == 403


def _children(pid: int) -> set[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_serve_restart_keeps_data_and_ctrl_c_stops_everything(argilla, tmp_path):
    """`quantmedic annotate serve --home HOME` twice on one home: the second start reuses the
    accounts and re-indexes the SQLite data into the fresh osmem; Ctrl-C leaves no process."""
    home = tmp_path / "home"
    python = argilla.server_python
    for run in (1, 2):
        port = reserve_port()
        serve = subprocess.Popen(
            [sys.executable, "-m", "quantmedic.pipelines.cli", "annotate", "serve", "--home", str(home), "--port",
             str(port), "--python", python, "--annotators", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"},
        )
        try:
            output = []
            deadline = time.monotonic() + 180
            for line in serve.stdout:
                output.append(line)
                if "Press Ctrl-C" in line or time.monotonic() > deadline:
                    break
            assert "Press Ctrl-C" in "".join(output), "".join(output)
            url = f"http://127.0.0.1:{port}"
            assert url in "".join(output)
            children = _children(serve.pid)
            assert len(children) == 3  # redis, osmem, argilla-server

            annotator = _account(home, "annotator1")
            tok = token(url, annotator["username"], annotator["password"])
            if run == 1:
                client = rg.Argilla(api_url=url, api_key=_account(home, "owner")["api_key"])
                ds = rg.Dataset(name="kept", workspace="quantmedic", settings=_settings(), client=client)
                ds.create()
                ds.records.log(_records())
                record = _by_external_id(annotator_records(url, tok, ds.id))["r1"]
                submit_response(url, tok, record["id"], {"verdict": "incorrect"})
                dataset_id = ds.id
            else:  # the search index was rebuilt from the database
                found = annotator_records(url, tok, dataset_id, filters=[response_status_filter("submitted")])
                assert [r["external_id"] for r in found] == ["r1"]

            serve.send_signal(signal.SIGINT)  # what Ctrl-C does: the children run in their own sessions
            rest, _ = serve.communicate(timeout=60)
            assert serve.returncode == 0, "".join(output) + rest
            assert "stopped" in rest
        finally:
            if serve.poll() is None:  # a failed assertion: do not leave the server running
                serve.kill()
                serve.wait()
        assert not [pid for pid in children if _alive(pid)]


def _account(home: Path, username: str) -> dict:
    return next(a for a in json.loads((home / "accounts.json").read_text()) if a["username"] == username)
