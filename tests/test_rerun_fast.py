"""A rerun of a finished ``quantmedic judge`` reads what it skips cheaply: ``done_ids`` reads each verdict line for
its attempt id, status and config only, and ``iter_attempts(..., done)`` leaves a done attempt's line unvalidated.
Nothing that was not judged ok under the same settings counts as done, and a conflicting repeat behind a done id
is still refused."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from quantmedic.judge.adapters import DoneAttempt, iter_attempts, load_attempts
from quantmedic.judge.job import iter_selected
from quantmedic.judge.verdict_file import done_ids, scan
from quantmedic.pipelines.data import shipped_path
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.records import Attempt, Verdict

from .test_cli_judge import cli

ALREADY = "already judged (ok, same settings)"


@pytest.fixture(scope="module")
def failed() -> list[Attempt]:
    return [a for a in load_attempts(shipped_path("gsm8k-solutions")) if a.correct is False][:8]


def verdict(attempt: Attempt, status: str = "ok", config: str = "cfg-A", **fields) -> Verdict:
    scored = {"first_wrong_step": 0, "category": "execution", "subtype": "computational"} if status == "ok" else {}
    return Verdict(attempt=attempt, status=status, config=config, judge_model="fault", taxonomy="t@1",
                   **{**scored, **fields})


def reordered(line: str) -> str:
    """The same record with its top-level keys in reverse order and spaces after separators."""
    data = json.loads(line)
    return json.dumps(dict(reversed(list(data.items())))) + "\n"


def lines_of(*verdicts: Verdict) -> list[str]:
    return [v.model_dump_json() + "\n" for v in verdicts]


def reference_done(path, config: str) -> set:
    """What ``done_ids`` gave before it read lines cheaply: a full ``json.loads`` of each line."""
    return {row.attempt_id for row in scan(path) if row.status == "ok" and row.config == config}


def test_done_ids_counts_only_ok_under_the_same_config_in_any_key_order(failed, tmp_path):
    a = failed
    decoy = '{"status": "ok", "config": "cfg-A"} "status":"ok","config":"cfg-A"'
    lines = lines_of(verdict(a[0]), verdict(a[1]), verdict(a[2], "unscored", reason="no valid answer"),
                     verdict(a[3], config="cfg-B"),
                     verdict(a[4], "unscored", raw_response=decoy, explanation=decoy))
    lines[1] = reordered(lines[1])  # attempt last, status and config before it: still done
    lines[3] = reordered(lines[3])
    no_config = json.loads(lines_of(verdict(a[5]))[0])
    del no_config["config"]
    twice = lines_of(verdict(a[6]))[0].rstrip("}\n") + ',"status":"unscored"}\n'  # the last key wins, as in json
    out = tmp_path / "v.jsonl"
    out.write_text("".join(lines) + "\n" + json.dumps(no_config) + "\n" + twice, encoding="utf-8")
    assert done_ids(out, "cfg-A") == reference_done(out, "cfg-A") == {a[0].id, a[1].id}
    assert done_ids(out, "cfg-B") == {a[3].id}
    assert done_ids(out, "cfg-C") == set() and done_ids(tmp_path / "none.jsonl", "cfg-A") == set()


@pytest.mark.parametrize("bad, field", [("not json at all", None), ('{"status": "ok", "attempt": {}}', "id"),
                                        ('{"id": "v-1", "attempt": {"id": "x"}}', "id")])
def test_done_ids_still_refuses_a_line_that_is_not_a_verdict(failed, tmp_path, bad, field):
    out = tmp_path / "v.jsonl"
    out.write_text("".join(lines_of(verdict(failed[0]), verdict(failed[1]))) + bad + "\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        done_ids(out, "cfg-A")
    assert caught.value.line == 3 and caught.value.field == field


def attempt_lines(attempts: list[Attempt]) -> list[str]:
    return [a.model_dump_json() + "\n" for a in attempts]


def test_a_done_attempt_comes_unvalidated_the_others_in_full(failed, tmp_path):
    lines = attempt_lines(failed[:4])
    data = json.loads(lines[2])
    data["unknown_field"] = 1  # the full parse refuses it (extra fields are forbidden)
    lines[2] = json.dumps(data) + "\n"
    path = tmp_path / "a.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(InputError, match="unknown_field"):
        list(iter_attempts(path))
    got = list(iter_attempts(path, done={failed[1].id, failed[2].id}))
    assert [type(x) for x in got] == [Attempt, DoneAttempt, DoneAttempt, Attempt]
    assert got[1] == DoneAttempt(failed[1].id, False) and got[0] == failed[0] and got[3] == failed[3]
    assert next(iter_attempts(path, "quantmedic", done={failed[0].id})) == DoneAttempt(failed[0].id, False)


def test_repeats_behind_a_done_id_exact_is_fine_a_conflict_is_refused_naming_both_lines(failed, tmp_path):
    lines = attempt_lines(failed[:3])
    path = tmp_path / "a.jsonl"
    path.write_text("".join([*lines, lines[1], reordered(lines[1])]), encoding="utf-8")  # the same, twice
    done = {failed[1].id}
    assert [type(x) for x in iter_attempts(path, done=done)] == [Attempt, DoneAttempt, Attempt, DoneAttempt,
                                                                 Attempt]
    changed = failed[1].model_copy(update={"steps": (*failed[1].steps, "And so on.")})
    path.write_text("".join([*lines, changed.model_dump_json() + "\n"]), encoding="utf-8")
    for given in (done, None):
        with pytest.raises(InputError, match="also line 2's, with a different steps") as caught:
            list(iter_attempts(path, done=given))
        assert caught.value.line == 4


def test_selection_counts_done_attempts_under_limit_and_correct(failed, tmp_path):
    correct = failed[0].model_copy(update={"id": "right", "correct": True})
    path = tmp_path / "a.jsonl"
    write_records(path, [correct, *failed[:4], failed[1]])
    done = {"right", failed[0].id, failed[1].id}
    skipped: Counter = Counter()
    chosen = list(iter_selected(iter_attempts(path, done=done), False, 3, skipped, done))
    assert [a.id for a in chosen] == [failed[2].id]
    assert skipped == {"correct": 1, ALREADY: 2, "over --limit": 1, "duplicate": 1}
    skipped = Counter()
    assert list(iter_selected(iter_attempts(path, done=done), True, None, skipped, done)) == failed[2:4]
    assert skipped == {ALREADY: 3, "duplicate": 1}


def test_rerun_sends_nothing_and_rejudges_only_what_is_not_done(faults, failed, tmp_path):
    source, out, cache = tmp_path / "in.jsonl", tmp_path / "v.jsonl", tmp_path / "c.sqlite"
    write_records(source, failed[:6])
    base = ["judge", source, "--base-url", faults.base_url, "-m", "fault", "--out", out, "--cache", cache]
    assert cli(*base).returncode == 0
    assert len(faults.requests()) == 6
    faults.script([])
    rerun = cli(*base)
    assert rerun.returncode == 0, rerun.stderr
    assert faults.requests() == [] and f"6 {ALREADY}" in rerun.stderr
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    config = json.loads(lines[0])["config"]
    unscored, other = json.loads(lines[1]), json.loads(lines[2])
    unscored["status"], other["config"] = "unscored", "cfg-other"
    lines[1:4] = [json.dumps(unscored) + "\n", json.dumps(other) + "\n", reordered(lines[3])]
    out.write_text("".join(lines), encoding="utf-8")
    faults.script([])
    again = cli(*base[:-1], tmp_path / "fresh.sqlite")  # a fresh cache: the two are asked again
    assert again.returncode == 0, again.stderr
    assert len(faults.requests()) == 2 and f"4 {ALREADY}" in again.stderr
    verdicts = read_records(out, Verdict)
    assert sorted(v.attempt.id for v in verdicts) == sorted(a.id for a in failed[:6])
    assert {(v.status, v.config) for v in verdicts} == {("ok", config)}
    changed = failed[2].model_copy(update={"model": "another"})
    with source.open("a", encoding="utf-8") as handle:
        handle.write(changed.model_dump_json() + "\n")
    faults.script([])
    refused = cli(*base)
    assert refused.returncode == 1 and faults.requests() == []
    assert "in.jsonl:7" in refused.stderr and "also line 3's, with a different model" in refused.stderr
