"""The study matrix (``matrix:`` × ``seeds:``): the cells it expands to, the refusal of a cell that cannot run here
(before any work, nothing written), the GPU-scale example validated offline, and a 2 × 2 × 2-seed grid run end
to end on the tiny model through the judge, reported (read in headless Chromium) and resumed.
"""

import json
import statistics
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from quantmedic.judge.metrics.intervals import wilson_interval
from quantmedic.pipelines.models.formats import Hardware
from quantmedic.pipelines.study.config import StudyConfig
from quantmedic.taxonomy.errors import pydantic_error_field
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import Attempt

from .support.tiny_model import tiny_model
from .test_annotate_browser import browser  # noqa: F401  (fixture)
from .test_cli_judge import cli
from .test_study import judge_args, stages_that_ran
from .test_study_reasoning import flat

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "low-bit-grid.yaml"
CELLS = ["gptq-w3-g128", "gptq-w3-g128-kvint4", "gptq-w4-g128", "gptq-w4-g128-kvint4"]
BASE = {"name": "s", "model": {"path": "m"}, "benchmark": {"name": "gsm8k"}}


def grid_study(tmp_path: Path, model: Path, **extra) -> Path:
    config = {
        "name": "grid", "seeds": [0, 1], "model": {"path": str(model), "size": "2M"},
        "matrix": {"methods": ["gptq"], "bits": [3, 4], "kv_cache": [None, "int4"],
                   "settings": {"tool": "llmcompressor", "calibration": "gsm8k", "num_samples": 8,
                                "max_seq_length": 128, "simulate": True}},
        "benchmark": {"name": "gsm8k", "limit": 16},
        "generation": {"backend": "transformers", "max_tokens": 96, "batch_size": 8, "temperature": 0.3},
        "judge": {"failures": "all", "limit": 2}, **extra}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_the_matrix_expands_into_cells_after_the_given_quantizations():
    config = StudyConfig.model_validate({**BASE, "seeds": [7, 8], "quantizations": [{"method": "awq", "name": "mine"}],
                                         "matrix": {"methods": ["gptq", "w8a8", {"method": "w4a4", "rotation": "quip"}],
                                                    "bits": [3, 4], "kv_cache": [None, "int4"],
                                                    "settings": {"simulate": True, "num_samples": 16}}})
    assert [q.label for q in config.quantizations] == [
        "mine", "gptq-w3-g128", "gptq-w3-g128-kvint4", "gptq-w4-g128", "gptq-w4-g128-kvint4", "w8a8-w8",
        "w8a8-w8-kvint4", "w4a4-w4-g128-quip", "w4a4-w4-g128-quip-kvint4"]
    assert config.seed == 7 and config.seed_list == [7, 8] and config.field_of(0) == "quantizations.0"
    assert config.field_of(1) == "matrix" and all(q.simulate and q.num_samples == 16 for q in config.quantizations[1:])
    refused = {"matrix.settings": {"matrix": {"methods": ["gptq"], "settings": {"bits": 3}}},
               "matrix": {"matrix": {"methods": ["gptq"], "bits": [5]}},
               "seeds": {"seed": 1, "seeds": [0, 1], "quantizations": [{"method": "gptq"}]},
               "quantizations": {}}
    for field, bad in refused.items():
        with pytest.raises(ValidationError) as error:
            StudyConfig.model_validate({**BASE, **bad})
        assert pydantic_error_field(error.value.errors()[0]) == field
    with pytest.raises(ValidationError, match="same settings"):
        StudyConfig.model_validate({**BASE, "quantizations": [{"method": "gptq"}], "matrix": {"methods": ["gptq"]}})


def test_a_cell_that_cannot_run_here_is_refused_before_any_work(tmp_path):
    if (Hardware.detect().cuda_capability or (0, 0)) >= (10, 0):
        pytest.skip("a Blackwell GPU runs NVFP4 on real kernels")
    model = tiny_model()
    study = grid_study(tmp_path, model, matrix={"methods": ["gptq", "nvfp4"], "bits": [4]})
    out = tmp_path / "study"
    refused = cli("run", study, "--out", out)
    assert refused.returncode == 1, refused.stderr
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and 'field "matrix"' in line and f"{study}:" in line
    assert "nvfp4-w4: W4A4 nvfp4 needs a Blackwell GPU for real kernels; add `simulate: true`" in flat(line)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]
    checked = cli("run", study, "--out", out, "--check")  # --check may run elsewhere: a note, not a refusal
    assert checked.returncode == 0 and "would refuse matrix: nvfp4-w4" in flat(checked.stderr) and not out.exists()
    given = tmp_path / "given.yaml"
    given.write_text(yaml.safe_dump({**BASE, "model": {"path": str(model)}, "quantizations": [
        {"method": "gptq"}, {"method": "none", "kv_cache": "int3"}]}))
    refused = cli("run", given, "--out", out)
    assert refused.returncode == 1 and 'field "quantizations.1"' in refused.stderr and not out.exists()
    assert "kv-int3: an int3 KV cache has no real kernels" in flat(refused.stderr)


def test_the_low_bit_grid_example_validates_without_downloading_anything(tmp_path):
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = cli("run", EXAMPLE, "--check", "--out", tmp_path / "study", cwd=tmp_path, env=offline)
    assert result.returncode == 0, result.stderr
    assert "valid (9 quantizations, benchmark aime120" in flat(result.stderr)
    assert list(tmp_path.iterdir()) == []
    config = StudyConfig.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    assert [q.label for q in config.quantizations] == ["gptq-w3-g128", "gptq-w4-g128", "awq-w3-g128", "awq-w4-g128",
                                                       "w8a8-w8", "nvfp4-w4", "kv-fp8", "kv-int4", "kv-int3"]
    assert config.seed_list == [42, 43, 44] and config.seed == 42
    assert {q.label for q in config.quantizations if q.simulate} == {"nvfp4-w4", "kv-int4", "kv-int3"}
    g = config.seeded("generation")
    assert (g.n, g.temperature, g.max_tokens, g.backend) == (1, 0.6, 32768, "auto")


def expected_row(out: Path, state: dict, label: str) -> dict:
    """What the grid row of ``label`` must say, from its attempts files."""
    runs = []
    for seed, name in ((0, f"generate:{label}"), (1, f"generate:{label}@s1")):
        attempts = read_records(out / state[name]["folder"] / "attempts.jsonl", Attempt)
        graded = [a for a in attempts if a.correct is not None]
        right = sum(a.correct is True for a in graded)
        runs.append((seed, right / len(graded), wilson_interval(right, len(graded)), attempts))
    mean = statistics.fmean(r[1] for r in runs)
    tokens = [a.completion_tokens for r in runs for a in r[3]]
    executions = {a.quantization.execution for r in runs for a in r[3] if a.quantization}
    return {"mean": mean, "sd": statistics.stdev([r[1] for r in runs]), "executions": executions,
            "intervals": "; ".join(f"s{s}: [{100 * i.low:.1f}, {100 * i.high:.1f}]" for s, _, i, _ in runs),
            "tokens": f"{statistics.fmean(tokens):.0f}"}


@pytest.mark.slow
def test_a_two_by_two_grid_with_two_seeds_runs_reports_and_resumes(fault, browser, tmp_path):  # noqa: F811
    study, out = grid_study(tmp_path, tiny_model()), tmp_path / "study"
    fault.script([])
    args = ["run", study, "--out", out, "--until", "judge", *judge_args(fault.base_url)]
    first = cli(*args, cwd=tmp_path, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    state = json.loads((out / "state.json").read_text())
    seeded = {f"{k}:{q}@s1" for q in CELLS for k in ("generate", "compare")} | {"generate:fp@s1"}
    assert seeded | {f"{k}:{q}" for q in CELLS for k in ("quantize", "generate", "compare", "judge")} <= set(state)
    assert not any(name.startswith("quantize:") and "@" in name for name in state)  # one checkpoint per cell
    assert not any(name.startswith("judge:") and "@" in name for name in state)  # judged on the primary seed
    assert json.loads((out / "study.lock").read_text())["seeds"] == [0, 1]
    fp0, fp1 = (read_records(out / state[n]["folder"] / "attempts.jsonl", Attempt) for n in ("generate:fp",
                                                                                              "generate:fp@s1"))
    assert {a.sampling.extra["base_seed"] for a in fp0} == {0} and {a.sampling.extra["base_seed"] for a in fp1} == {1}

    made = cli("report", out)
    assert made.returncode == 0, made.stderr
    browser.get((out / "report" / "index.html").as_uri())
    sections = [s.get_attribute("id") for s in browser.find_elements("css selector", "section")]
    assert "grid" in sections and sections.index("grid") < sections.index("accuracy")
    rows = {}
    for tr in browser.find_elements("css selector", "table[data-table='grid'] tbody tr"):
        cells = [td.text for td in tr.find_elements("css selector", "td")]
        rows[cells[0].removesuffix(" †")] = cells
    assert list(rows) == ["full precision", *CELLS]
    fp = expected_row(out, state, "fp")
    for label, cells in rows.items():
        want = expected_row(out, state, "fp" if label == "full precision" else label)
        assert cells[1] == "gsm8k" and cells[2] == "0 1" and cells[3] == f"{100 * want['mean']:.1f}%"
        assert cells[4] == f"{100 * want['sd']:.1f} pts" and cells[5] == want["intervals"]
        assert cells[7] == want["tokens"]
        if label != "full precision":
            assert cells[6] == f"{100 * (want['mean'] - fp['mean']):+.1f} pts"
            simulated = "simulated" in want["executions"]
            assert cells[0].endswith(" †") == simulated and cells[8] == ("simulated" if simulated else "real kernels")
    for label in ("gptq-w3-g128-kvint4", "gptq-w4-g128-kvint4"):  # an int4 KV cache only runs simulated
        assert rows[label][0].endswith(" †") and rows[label][8] == "simulated"
    grid_text = browser.find_element("css selector", "section#grid p").text
    assert "† simulated" in grid_text and "primary seed's attempts only (seed 0)" in grid_text
    heat = browser.find_element("css selector", "img[data-figure='grid-drops']")
    assert browser.execute_script("return arguments[0].naturalWidth", heat) > 100
    assert (out / "report" / "tables" / "grid.csv").read_text().startswith("model,benchmark,seeds,accuracy (mean)")
    judged = {tr.text.split()[0] for tr in browser.find_elements("css selector", "table[data-table='categories'] tbody tr")}
    assert judged == set(CELLS)  # every cell's error-category mix
    accuracy = {tr.text.split()[0] for tr in browser.find_elements("css selector", "table[data-table='accuracy'] tbody tr")}
    assert set(CELLS) <= accuracy and not any("@" in a for a in accuracy)

    again = cli(*args, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert stages_that_ran(again.stderr) == [] and "0 stages ran" in flat(again.stderr)
