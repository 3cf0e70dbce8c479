"""``train dpo``, ``generate --adapter`` and ``evaluate`` on the tiny local model (CPU, real TRL/PEFT).

The medicine is built from real verdicts (see test_medicine); each training runs 10 DPO steps.
"""

import json
from pathlib import Path

import pytest

from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.training.dpo import train_dpo
from quantmedic.pipelines.training.dpo_config import DPOSettings
from quantmedic.pipelines.models.generation import generate
from quantmedic.pipelines.models.quantize import quantize
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.records import Attempt

from .support.tiny_model import calibration_texts, tiny_model
from .test_cli_judge import cli
from .test_medicine import solutions, verdicts  # noqa: F401  (fixtures)

BASES = {"fp32": ("none", None, False), "nf4": ("none", None, True), "gptq": ("gptq", "gptqmodel", False),
         "compressed-tensors": ("gptq", "llmcompressor", False)}
LOADS = {"fp32": "full", "nf4": "nf4", "gptq": "gptqmodel", "compressed-tensors": "compressed-tensors-dequantized"}


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_model()


@pytest.fixture(scope="module")
def medicine(verdicts, gsm8k_solutions, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("dpo") / "medicine"
    result = cli("medicine", "build", "-v", verdicts, "-a", gsm8k_solutions, "--budget", "24", "-o", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def base(tiny, tmp_path_factory):
    made = {}
    root = tmp_path_factory.mktemp("bases")

    def get(name: str) -> Path:
        method, tool, _ = BASES[name]
        if method == "none":
            return tiny
        if name not in made:
            quantize(tiny, method=method, bits=4, group_size=128, calibration=calibration_texts(16), out_dir=root / name,
                     tool=tool, num_samples=16, max_seq_length=256)
            made[name] = root / name
        return made[name]

    return get


def lora_b_norm(adapter: Path) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    norms = [float(t.float().norm()) for k, t in weights.items() if "lora_B" in k]
    assert norms, "no LoRA B matrices in the adapter"
    return sum(norms)


@pytest.mark.parametrize("name", list(BASES))
def test_ten_dpo_steps_train_an_adapter_that_loads_and_generates(name, base, medicine, tmp_path):
    model = base(name)
    out = tmp_path / "adapter"
    result = train_dpo(model, medicine, out, DPOSettings(max_steps=10, batch_size=2, learning_rate=1e-3,
                                                         max_length=1024, qlora=BASES[name][2], save_steps=5))
    record = result.record
    assert result.status == "trained" and record["steps"] == 10 and record["base_load"] == LOADS[name]
    assert record["pairs"] == 24 and record["pairs_seen"] == 20 and record["seconds_per_pair"] > 0
    assert record["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    log = [json.loads(line) for line in (out / "training-log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in log if "loss" in h] == list(range(1, 11))
    assert (out / "loss.png").stat().st_size > 5000 and (out / "adapter_config.json").is_file()
    assert lora_b_norm(out) > 0  # LoRA's B starts at zero: non-zero means the steps changed the adapter
    assert json.loads((out / "quantmedic-train.json").read_text())["versions"]["trl"].startswith("1.")

    problems = load_benchmark("gsm8k")[-2:]
    attempts_path = tmp_path / "after.jsonl"
    generate(model, problems, out_path=attempts_path, max_tokens=24, adapter=out)
    after = read_records(attempts_path, Attempt)
    assert len(after) == 2 and {a.model for a in after} == {f"{Path(model).name}+adapter"}
    assert (after[0].quantization is None) == (BASES[name][0] == "none")


def test_the_command_refuses_long_pairs_with_numbers_then_trains_merges_and_skips_a_rerun(tiny, medicine, tmp_path):
    out = tmp_path / "a"
    refused = cli("train", "dpo", tiny, "--data", medicine, "--out", out, "--max-length", "64", "--max-steps", "2")
    assert refused.returncode == 2, refused.stderr
    assert "24 of 24 pairs are longer than max_length=64 tokens" in refused.stderr and "--drop-long" in refused.stderr
    assert not (out / "adapter_model.safetensors").exists()
    args = ["train", "dpo", tiny, "--data", medicine, "--out", out, "--max-length", "1024", "--max-steps", "3",
            "--batch-size", "2", "--learning-rate", "1e-3", "--merge"]
    trained = cli(*args)
    assert trained.returncode == 0, trained.stderr
    assert "trained 3 steps on 24 pairs over a full base" in trained.stderr
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert merged.config.num_hidden_layers == 2 and not hasattr(merged, "peft_config")
    again = cli(*args)
    assert again.returncode == 0 and "already trained" in again.stderr
    other = cli(*[a if a != "3" else "4" for a in args])
    assert other.returncode == 2 and "--overwrite" in other.stderr
    gptq_merge = cli("train", "dpo", tiny, "--data", medicine, "--out", tmp_path / "b", "--qlora", "--target-modules",
                     "q_proj,nope", "--max-steps", "1")
    assert gptq_merge.returncode == 2 and "nope: no such module" in gptq_merge.stderr


# --- evaluate ---

def _attempts(problems, correct, model, quantized=False):
    from quantmedic.taxonomy.records import Quantization

    q = Quantization(method="gptq", bits=4) if quantized else None
    return [Attempt(problem=p, steps=("Step 1: x",), correct=c, model=model, quantization=q, grading="math-verify")
            for p, c in zip(problems, correct)]


def test_evaluate_reports_the_recovered_share_on_problems_outside_the_medicine(medicine, tmp_path):
    from quantmedic.medicine.contamination import problem_key

    trained_on = json.loads((medicine / "medicine.json").read_text())["problem_keys"]
    gsm8k = load_benchmark("gsm8k")
    treated = [p for p in gsm8k if problem_key(p) in set(trained_on)][:2]
    fresh = [p for p in gsm8k if problem_key(p) not in set(trained_on)][:20]
    problems = fresh + treated
    # full: 16 of 20 right; before: 8; after: 12 (5 fixed, 1 broken) -> recovered (12-8)/(16-8) = 50%
    full = [True] * 16 + [False] * 4 + [True, True]
    before = [True] * 8 + [False] * 12 + [False, False]
    after = [True] * 7 + [False] + [True] * 5 + [False] * 7 + [True, True]  # the treated two "recover": not counted
    paths = {}
    for name, flags, model, q in (("full", full, "m", False), ("before", before, "m-gptq", True),
                                  ("after", after, "m-gptq+adapter", True)):
        paths[name] = write_records(tmp_path / f"{name}.jsonl", _attempts(problems, flags, model, q))
    from quantmedic.taxonomy.records import Verdict

    def verdicts(name, categories):  # diagnoses of the failures, as the judge would write them
        failed = [a for a in read_records(paths[name], Attempt) if a.correct is False]
        return write_records(tmp_path / f"v-{name}.jsonl", [
            Verdict(attempt=a, status="ok", first_wrong_step=0, category=c, subtype=None, judge_model="j",
                    taxonomy="t@1") for a, c in zip(failed, categories)])

    before_v = verdicts("before", ["execution"] * 9 + ["method"] * 3 + ["reasoning"] * 2)  # the last 2: treated
    after_v = verdicts("after", ["execution"] * 3 + ["method"] * 5)
    result = cli("evaluate", "--full", paths["full"], "--before", paths["before"], "--after", paths["after"],
                 "--medicine", medicine, "--out", tmp_path / "eval", "--verdicts-before", before_v,
                 "--verdicts-after", after_v)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "eval" / "recovery.json").read_text())
    assert report["problems"] == 20 and report["excluded_in_medicine"] == 2
    assert (report["full"]["correct"], report["before"]["correct"], report["after"]["correct"]) == (16, 8, 12)
    assert (report["fixed"], report["broken"]) == (5, 1) and report["recovered_share"] == pytest.approx(0.5)
    low, high = report["recovered_interval"]
    assert -1.0 <= low < 0.5 < high <= 1.0 and report["undefined_resamples"] < 0.05
    assert report["gain"] == pytest.approx(0.2) and report["mcnemar_p"] == pytest.approx(0.21875)  # 2*(1+6)/64
    assert "recovered share of the lost accuracy: 50.0%" in result.stdout
    shift = {c["category"]: (c["before"], c["after"]) for c in report["categories"]}
    assert shift == {"execution": (9, 3), "method": (3, 5)}  # the reasoning failures were on treated problems
    assert (tmp_path / "eval" / "recovery.png").stat().st_size > 5000


def test_an_interrupted_training_resumes_from_its_last_checkpoint(tiny, medicine, tmp_path):
    import shutil

    out = tmp_path / "resumed"
    settings = DPOSettings(max_steps=4, batch_size=2, learning_rate=1e-3, max_length=1024, save_steps=2)
    train_dpo(tiny, medicine, out, settings)
    # as if the run had died after saving checkpoint-2: nothing of what came later is on disk
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    for name in ("quantmedic-train.json", "adapter_model.safetensors", "training-log.jsonl"):
        (out / name).unlink()
    result = train_dpo(tiny, medicine, out, settings)
    record = result.record
    assert result.status == "trained" and record["resumed"] and record["resumed_from_step"] == 2
    assert record["steps"] == 4 and record["pairs_seen"] == 4  # only steps 3 and 4 ran in the second call
    log = [json.loads(line) for line in (out / "training-log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in log if "loss" in h] == [1, 2, 3, 4]  # steps 1-2 restored, 3-4 trained again
    assert lora_b_norm(out) > 0


def test_continuations_start_exactly_at_the_first_wrong_step(tiny, verdicts, tmp_path):  # noqa: F811
    from quantmedic.medicine.pairs import shares_prefix
    from quantmedic.taxonomy.records import Verdict

    out = tmp_path / "continuations.jsonl"
    result = cli("medicine", "continue", tiny, "-v", verdicts, "--limit", "3", "--n", "2", "--max-tokens", "32",
                 "-o", out)
    assert result.returncode == 0, result.stderr
    made = read_records(out, Attempt)
    by_attempt = {v.attempt.id: v for v in read_records(verdicts, Verdict)}
    assert len(made) == 6 and all(a.grading for a in made) and {a.model for a in made} == {"tiny-qwen2"}
    for attempt in made:
        verdict = by_attempt[attempt.sampling.extra["continues"]]
        k = attempt.sampling.extra["prefix_steps"]
        assert k == verdict.first_wrong_step == 1 and attempt.steps[:k] == verdict.attempt.steps[:k]
        assert shares_prefix(attempt.steps, verdict.attempt.steps, k) and attempt.steps[k].startswith("Step 2:")
        assert attempt.sampling.sample_index >= 1000 and attempt.source == "continuation"
    again = cli("medicine", "continue", tiny, "-v", verdicts, "--limit", "3", "-o", out)
    assert again.returncode == 2 and "exists" in again.stderr
