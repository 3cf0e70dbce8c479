"""``quantmedic run`` and ``quantmedic report`` on the CPU example study (examples/cpu-study.yaml).

The example runs as written except for the judge, which is pointed at the fault server's
fixed-opinion judge (``--set``) so that every verdict is scored and the later stages have input
(the embedded SmolLM2 leaves most items unscored and takes ~13 s a request). The human step is
answered by two annotator accounts over Argilla's REST API, on the real local Argilla server.
"""

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantmedic.taxonomy.local_server import stop_process_group

from .support import argilla_server as rest
from .support.servers import fault_server
from .support.tiny_model import tiny_model
from .test_annotate_browser import browser  # noqa: F401  (fixture)
from .test_cli_judge import cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cpu-study.yaml"
JUDGE = "say:1:0.9:method/procedural_error"


def judge_args(base_url: str) -> list[str]:
    return ["--set", f"judge.base_url={base_url}", "--set", f"judge.models=[\"{JUDGE}\"]"]


def stages_that_ran(stderr: str) -> list[str]:
    return [line.strip("─ ").strip() for line in stderr.splitlines() if line.startswith("─") and line.strip("─ ")]


def test_config_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_text("name: s\nmodel: {path: m}\nquantizations:\n  - {method: gptq, bits: 9}\nbenchmark: {name: gsm8k}\n")
    result = cli("run", bad)
    assert result.returncode == 1 and f"{bad}:4:" in result.stderr and "quantizations.0.bits" in result.stderr
    unknown = tmp_path / "typo.yaml"
    unknown.write_text(EXAMPLE.read_text().replace("training:", "trainng:"))
    result = cli("run", unknown, "--check")
    assert result.returncode == 1 and '"trainng"' in result.stderr
    assert cli("run", EXAMPLE, "--check", "--set", "medicine.budget=0").returncode == 2
    model = tiny_model()  # --check also checks the folders the config names: the example's model must be there
    result = cli("run", EXAMPLE, "--check", "--set", f"model.path={model}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    missing = cli("run", EXAMPLE, "--check", "--set", "model.path=./no-model-here", cwd=tmp_path)
    assert missing.returncode == 1 and 'field "model.path"' in missing.stderr


@pytest.mark.slow
def test_the_example_study_runs_waits_for_reviews_resumes_and_reports(argilla, fault, browser, tmp_path):  # noqa: F811
    tiny_model()  # the example's model folder (.cache/test-models/tiny-qwen2)
    out = tmp_path / "study"
    env = {"ARGILLA_API_URL": argilla.url, "ARGILLA_API_KEY": argilla.owner.api_key}
    args = ["run", EXAMPLE, "--out", out, *judge_args(fault.base_url), "--set", f"argilla.workspace={argilla.workspace}",
            "--set", "judge.eval_limit=8"]
    fault.script([])
    first = cli(*args, env=env, cwd=EXAMPLE.parents[1], timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    pushed = state["review:gptq-w4-g128"]["pushed"]  # the scored, non-degenerate verdicts (how many varies)
    assert pushed >= 2 and "waiting for human reviews" in first.stderr
    assert f"0 of {pushed} verdicts reviewed" in " ".join(first.stderr.split())  # rich may wrap the line
    assert state["review:gptq-w4-g128"]["status"] == "waiting" and "medicine:gptq-w4-g128" not in state

    # the annotators answer: one corrects the category, the others agree with the judge
    ann = argilla.annotators[0]
    token = rest.token(argilla.url, ann.username, ann.password)
    dataset = next(d for d in rest.my_datasets(argilla.url, token) if d["name"] == "cpu-example-gptq-w4-g128")
    records = rest.annotator_records(argilla.url, token, dataset["id"])
    verdicts = out / state["judge:gptq-w4-g128"]["folder"] / "verdicts.jsonl"
    steps = {v["id"]: v["first_wrong_step"] for v in map(json.loads, verdicts.read_text().splitlines())}
    for i, record in enumerate(records):
        agree = {"judge_correct": "yes", "first_wrong_step": str(steps[record["external_id"]]), "category": "method",
                 "subtype": "procedural_error"}
        answer = agree if i else {**agree, "judge_correct": "no", "category": "execution",
                                  "subtype": "computational_error"}
        rest.submit_response(argilla.url, token, record["id"], answer)

    second = cli(*args, env=env, cwd=EXAMPLE.parents[1], timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    ran = stages_that_ran(second.stderr)
    assert ran == ["medicine:gptq-w4-g128", "train:gptq-w4-g128", "treated:gptq-w4-g128", "rejudge:gptq-w4-g128",
                   "evaluate:gptq-w4-g128"]
    assert "judge:gptq-w4-g128: unchanged, skipped" in second.stderr
    state = json.loads((out / "state.json").read_text())
    medicine = out / state["medicine:gptq-w4-g128"]["folder"] / "medicine" / "medicine.json"
    report = json.loads(medicine.read_text())
    assert len(records) == pushed
    assert report["settings"]["reviews"] and report["categories"] == {"method": pushed - 1, "execution": 1}
    lock = json.loads((out / "study.lock").read_text())
    assert lock["seed"] == 0 and lock["versions"]["trl"] and set(lock["stages"]) == set(state)

    # an edit re-runs only the stages it affects
    edited = cli(*args, "--set", "training.learning_rate=0.002", env=env, cwd=EXAMPLE.parents[1], timeout=900)
    assert edited.returncode == 0, edited.stderr[-3000:]
    assert stages_that_ran(edited.stderr) == ["train:gptq-w4-g128", "treated:gptq-w4-g128", "rejudge:gptq-w4-g128",
                                              "evaluate:gptq-w4-g128"]
    state = json.loads((out / "state.json").read_text())
    rejudged = (out / state["rejudge:gptq-w4-g128"]["folder"] / "verdicts.jsonl").read_text().splitlines()
    assert len(rejudged) == 6 and all(json.loads(v)["attempt"]["model"] == "model+adapter" for v in rejudged)

    # the report, opened in headless Chromium
    made = cli("report", out)
    assert made.returncode == 0, made.stderr
    html = out / "report" / "index.html"
    assert "http://" not in html.read_text().replace("http://www.w3.org", "")  # nothing to fetch: renders offline
    browser.get(html.as_uri())
    sections = {s.get_attribute("id") for s in browser.find_elements("css selector", "section")}
    assert sections == {"accuracy", "flips", "categories", "positions", "judge", "medicine", "recovery"}
    images = browser.find_elements("css selector", "img[data-figure]")
    figures = {i.get_attribute("data-figure") for i in images}
    assert {"accuracy", "categories", "radar-2M", "positions", "recovery-gptq-w4-g128", "judge-steps"} <= figures
    meta = browser.find_element("css selector", "table[data-table='judge_meta_evaluation'] tbody tr").text
    assert meta.startswith(JUDGE) and " 8 " in meta  # the judge's ProcessBench scores on 8 items
    assert all(browser.execute_script("return arguments[0].naturalWidth", i) > 100 for i in images)
    accuracy_row = browser.find_element("css selector", "table[data-table='diagnostic_accuracy'] tbody tr").text
    accepted = f"{100 * (pushed - 1) / pushed:.1f}%"  # all but the corrected one accepted
    assert accuracy_row.startswith(f"gptq-w4-g128 {pushed} {pushed} {accepted}")
    for figure in figures:
        assert (out / "report" / "figures" / f"{figure}.png").is_file()
    assert (out / "report" / "tables" / "recovery.csv").read_text().startswith("quantization,problems")
    shot = tmp_path / "report.png"
    browser.set_window_size(1200, 4000)
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 100_000


@pytest.mark.slow
def test_a_run_killed_while_judging_resumes_with_the_answers_it_had(tmp_path):
    tiny_model()
    out = tmp_path / "study"
    with fault_server("--latency", "1.0", "--slots", "1") as slow:
        args = [sys.executable, "-m", "quantmedic.pipelines.cli", "run", str(EXAMPLE), "--out", str(out),
                "--set", "argilla=null", "--set", "judge.concurrency=1", "--until", "judge", *judge_args(slow.base_url)]
        env = {**os.environ, "COLUMNS": "200"}
        process = subprocess.Popen(args, cwd=EXAMPLE.parents[1], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True)
        cache = out / "cache" / "judge.sqlite"
        deadline = time.monotonic() + 600
        answered = 0
        while answered < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            if cache.is_file():
                try:
                    with sqlite3.connect(cache) as db:
                        answered = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                except sqlite3.Error:
                    pass
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        stop_process_group(process, timeout=0)  # SIGKILL to the whole group at once, as kill -9 would
        with sqlite3.connect(cache) as db:
            answered = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        state = json.loads((out / "state.json").read_text())
        assert state["judge:gptq-w4-g128"]["status"] == "running"
        slow.script([])
        resumed = cli("run", EXAMPLE, "--out", out, "--set", "argilla=null", "--set", "judge.concurrency=1",
                      "--until", "judge", *judge_args(slow.base_url), cwd=EXAMPLE.parents[1], timeout=900)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert stages_that_ran(resumed.stderr) == ["judge:gptq-w4-g128"]
        judged = [json.loads(line) for line in (out / json.loads((out / "state.json").read_text())
                                                ["judge:gptq-w4-g128"]["folder"] / "verdicts.jsonl").open()]
        sent = [r for r in slow.requests() if r["model"] == JUDGE]
        llm_judged = [v for v in judged if v["judge_model"] != "rules"]
        assert len(judged) == 6 and len(sent) == len(llm_judged) - answered  # the cached answers were not asked again
        # --from needs the earlier stages finished: medicine never ran, so training cannot start from it
        early = cli("run", EXAMPLE, "--out", out, "--set", "argilla=null", "--from", "train", *judge_args(slow.base_url),
                    cwd=EXAMPLE.parents[1])
        assert early.returncode == 2 and "stage medicine:gptq-w4-g128 has not finished" in early.stderr
