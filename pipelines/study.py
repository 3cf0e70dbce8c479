"""``quantmedic run STUDY.yaml``: every stage of a study, in dependency order, into one study folder.

Stages, per quantization ``Q`` (``generate:fp`` and ``judge-eval`` once)::

    quantize:Q → generate:fp, generate:Q → compare:Q → judge:Q (→ judge-eval) → review:Q
    → medicine:Q → train:Q → treated:Q → rejudge:Q → evaluate:Q

Each stage's key is a hash of its settings and of what its inputs hold (the keys of the stages
before it, and the content of human reviews); its files go to ``stages/NAME/KEY/``. A stage whose
key is unchanged and finished is skipped; an edit changes the keys of the stages it affects and
only they run again (into new folders: earlier results are kept). Inside a stage, work resumes:
generation appends to its file, judge answers sit in ``cache/judge.sqlite``, training resumes from
its checkpoints. ``review`` pushes the verdicts to Argilla and pulls the submitted reviews; until
enough are in, the run stops there cleanly and the next run picks them up. ``study.lock`` records
versions, seeds and every stage key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import read_records, write_atomic, write_records
from quantmedic.taxonomy.records import Verdict

from .study_config import QuantizationSpec, StudyConfig

STAGE_KINDS = ("quantize", "generate", "compare", "judge", "judge-eval", "review", "medicine", "train", "treated",
               "rejudge", "evaluate")
LOCKED_PACKAGES = ("quantmedic", "torch", "transformers", "trl", "peft", "bitsandbytes", "llmcompressor",
                   "compressed-tensors", "gptqmodel", "vllm", "datasets", "math-verify", "openai", "argilla")


class WaitingForReviews(Exception):
    """The review stage has pushed its verdicts and not enough reviews are in yet."""


class StudyError(InputError):
    """A stage cannot go on with what the earlier ones produced (the message says why)."""


def digest(*parts: Any) -> str:
    """A short SHA-256 of canonical JSON.

    >>> digest({"a": 1}) == digest({"a": 1}) != digest({"a": 2})
    True
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"


def _versions() -> dict[str, str | None]:
    from .dpo import package_versions

    return package_versions(LOCKED_PACKAGES)


@dataclass
class Study:
    """A study folder and the state of its stages."""

    config: StudyConfig
    data: dict
    root: Path
    console: Console
    start: str | None = None
    until: str | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_path = self.root / "state.json"
        self.state: dict[str, dict] = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        self.log: list[tuple[str, str]] = []

    # --- bookkeeping ---

    def _save(self) -> None:
        write_atomic(self.state_path, [json.dumps(self.state, indent=2, sort_keys=True) + "\n"])
        lock = {"study": self.config.name, "config_digest": digest(self.data), "config": self.data,
                "seed": self.config.seed, "versions": _versions(),
                "stages": {name: {k: s.get(k) for k in ("key", "status", "digest")} for name, s in self.state.items()}}
        write_atomic(self.root / "study.lock", [json.dumps(lock, indent=2, sort_keys=True) + "\n"])

    def folder(self, name: str) -> Path:
        entry = self.state.get(name)
        if not entry or entry.get("status") != "done":
            raise StudyError(self.root, f"stage {name} has not finished; run the study without --from first")
        return self.root / entry["folder"]

    def out(self, name: str) -> str:
        """What later stages see of ``name``: its output digest."""
        return self.state[name]["digest"]

    def _kind_index(self, name: str) -> int:
        return STAGE_KINDS.index(name.split(":")[0])

    def stage(self, name: str, settings: Any, inputs: list[str], work: Callable[[Path], str | None]) -> None:
        """Run ``work`` into the stage's folder unless the same key already finished there."""
        kind = self._kind_index(name)
        if self.until is not None and kind > STAGE_KINDS.index(self.until):
            return
        if self.start is not None and kind < STAGE_KINDS.index(self.start):
            self.folder(name)  # must exist
            self.log.append((name, "not run (--from)"))
            return
        key = digest(name, settings, [self.out(i) for i in inputs])
        entry = self.state.get(name, {})
        folder = self.root / "stages" / name.replace(":", "-") / key
        if entry.get("key") == key and entry.get("status") == "done" and folder.is_dir():
            self.log.append((name, "unchanged, skipped"))
            self.console.print(f"[dim]{name}: unchanged, skipped[/dim]", highlight=False)
            return
        self.console.rule(f"[bold]{name}")
        folder.mkdir(parents=True, exist_ok=True)
        self.state[name] = {"key": key, "status": "running", "folder": str(folder.relative_to(self.root))}
        self._save()
        try:
            produced = work(folder)
        except WaitingForReviews as waiting:
            self.state[name]["status"] = "waiting"
            self._save()
            self.log.append((name, "waiting"))
            raise waiting
        self.state[name].update(status="done", digest=produced or key)
        self._save()
        self.log.append((name, "ran"))


# --- the stages ---

def _problems(config: StudyConfig):
    from .benchmarks import load_benchmark

    b = config.benchmark
    return load_benchmark(b.name, split=b.split, limit=b.limit)


def _generate(model: str, problems, out: Path, config: StudyConfig, console: Console, adapter: Path | None = None):
    from .commands_models import grade_in_place
    from .generation import generate

    g = config.generation
    generate(model, problems, out_path=out, backend=g.backend, n=g.n, temperature=g.temperature, top_p=g.top_p,
             max_tokens=g.max_tokens, seed=config.seed, batch_size=g.batch_size, adapter=adapter, console=console)
    grade_in_place(out)


def _judge_job(config: StudyConfig, input_path: Path, out: Path | None, cache: Path, limit: int | None,
               taxonomy):
    from quantmedic.judge.backend import Endpoint

    from .judging import JudgeJob

    j = config.judge
    endpoints: tuple = ()
    if j.base_url:
        key = os.environ.get(j.api_key_env)
        endpoints = tuple(Endpoint(j.base_url, m, api_key=key) for m in (j.models or ["default"]))
    return JudgeJob(input=input_path, out=out, taxonomy=taxonomy, endpoints=endpoints, samples=j.samples,
                    temperature=j.temperature, max_tokens=j.max_tokens, seed=config.seed,
                    concurrency=j.concurrency or (16 if endpoints else 2), cache=cache, limit=limit)


def run_study(config: StudyConfig, data: dict, root: Path, *, console: Console, start: str | None = None,
              until: str | None = None) -> Study:
    """Run (or resume) every stage; raises WaitingForReviews when the humans are not done."""
    from quantmedic.taxonomy.model import load_taxonomy

    study = Study(config, data, root, console, start, until)
    taxonomy = load_taxonomy(config.taxonomy)
    problems = _problems(config)
    model = config.model
    problem_digest = digest([p.id for p in problems])
    cache = root / "cache" / "judge.sqlite"
    cache.parent.mkdir(parents=True, exist_ok=True)

    def source(_folder: Path) -> str:
        return digest(model.path, file_digest(Path(model.path) / "config.json"),
                      file_digest(Path(model.path) / "model.safetensors"))

    study.stage("quantize:fp", {"path": model.path}, [], source)
    study.stage("generate:fp", {"generation": config.generation.model_dump(), "problems": problem_digest,
                                "seed": config.seed}, ["quantize:fp"],
                lambda f: _generate(model.path, problems, f / "attempts.jsonl", config, console))
    if config.judge.base_url is None and study.until != "quantize":
        console.print("[yellow]note:[/yellow] the judge is the embedded SmolLM2-135M (weak): set judge.base_url "
                      "and judge.models for real diagnoses")
    for q in config.quantizations:
        _run_quantization(study, q, problems, problem_digest, taxonomy, cache)
    return study


def _quantized_dir(study: Study, q: QuantizationSpec) -> str:
    return q.path if q.path else str(study.folder(f"quantize:{q.label}") / "model")


def _run_quantization(study: Study, q: QuantizationSpec, problems, problem_digest: str, taxonomy, cache: Path) -> None:
    config, console, L = study.config, study.console, q.label

    def quantize_stage(folder: Path) -> str | None:
        if q.path:
            return digest(q.path, file_digest(Path(q.path) / "config.json"))
        from .quantize import quantize

        quantize(config.model.path, method=q.method, bits=q.bits, group_size=q.group_size, calibration=q.calibration,
                 out_dir=folder / "model", tool=q.tool, num_samples=q.num_samples, max_seq_length=q.max_seq_length)
        return None

    study.stage(f"quantize:{L}", q.model_dump(), ["quantize:fp"], quantize_stage)
    study.stage(f"generate:{L}", {"generation": config.generation.model_dump(), "problems": problem_digest,
                                  "seed": config.seed}, [f"quantize:{L}"],
                lambda f: _generate(_quantized_dir(study, q), problems, f / "attempts.jsonl", config, console))

    def compare_stage(folder: Path) -> None:
        from .commands_eval import load_graded
        from .compare import accuracy_plot, compare, flips_plot, to_json, to_markdown

        fp = load_graded(study.folder("generate:fp") / "attempts.jsonl")
        quant = load_graded(study.folder(f"generate:{L}") / "attempts.jsonl")
        c = compare(fp, quant, fp_label=config.model.label or None, quant_label=L)
        write_atomic(folder / "comparison.json", [json.dumps(to_json(c), indent=2) + "\n"])
        write_atomic(folder / "comparison.md", [to_markdown(c)])
        accuracy_plot(c, folder / "accuracy.png", title="Accuracy")
        flips_plot(c, folder / "flips.png")
        write_records(folder / "flipped_failures.jsonl", c.right_to_wrong)
        write_records(folder / "failures.jsonl", [a for a in quant if a.correct is False])

    study.stage(f"compare:{L}", {}, ["generate:fp", f"generate:{L}"], compare_stage)

    def judge_stage(folder: Path) -> None:
        from .judging import run_judge_job

        which = "flipped_failures.jsonl" if config.judge.failures == "flipped" else "failures.jsonl"
        job = _judge_job(config, study.folder(f"compare:{L}") / which, folder / "verdicts.jsonl", cache,
                         config.judge.limit, taxonomy)
        run_judge_job(job, console)

    judge_settings = {**config.judge.model_dump(exclude={"api_key_env", "concurrency", "eval_limit"}),
                      "taxonomy": f"{taxonomy.name}@{taxonomy.version}", "seed": config.seed}
    study.stage(f"judge:{L}", judge_settings, [f"compare:{L}"], judge_stage)
    if L == config.quantizations[0].label:
        _judge_eval_stage(study, taxonomy, cache)
    reviews_stage = _review_stage(study, q, taxonomy) if config.argilla else None

    def medicine_stage(folder: Path) -> None:
        from quantmedic.medicine.build import BuildSettings, build, read_inputs, write

        m = config.medicine
        verdicts = study.folder(f"judge:{L}") / "verdicts.jsonl"
        attempts = [study.folder("generate:fp") / "attempts.jsonl", study.folder(f"generate:{L}") / "attempts.jsonl"]
        reviews = study.folder(reviews_stage) / "reviews.jsonl" if reviews_stage else None
        inputs = read_inputs([verdicts], attempts, reviews)
        settings = BuildSettings(budget=m.budget, strategy=m.strategy, seed=config.seed, chosen=tuple(m.chosen),
                                 step_level=m.step_level, reviews=reviews is not None,
                                 exclude_categories=() if m.include_degenerate else ("degenerate",))
        pairs, report = build(inputs, settings)
        if not pairs:
            raise StudyError(verdicts, "the medicine is empty: " + ", ".join(
                f"{k}: {n}" for k, n in {**report["skipped"], **report["pair_notes"]}.items()) + " (a stronger "
                "judge, more problems or medicine.include_degenerate may help)")
        write(folder / "medicine", pairs, report, overwrite=True)

    medicine_inputs = [f"judge:{L}", "generate:fp", f"generate:{L}"] + ([reviews_stage] if reviews_stage else [])
    study.stage(f"medicine:{L}", config.medicine.model_dump(), medicine_inputs, medicine_stage)

    def train_stage(folder: Path) -> None:
        from .dpo import DPOSettings, train_dpo

        t = config.training
        settings = DPOSettings(max_length=t.max_length, beta=t.beta, learning_rate=t.learning_rate, epochs=t.epochs,
                               max_steps=t.max_steps, batch_size=t.batch_size,
                               gradient_accumulation=t.gradient_accumulation, lora_r=t.lora_r, lora_alpha=t.lora_alpha,
                               qlora=t.qlora, drop_long=t.drop_long, seed=config.seed)
        train_dpo(_quantized_dir(study, q), study.folder(f"medicine:{L}") / "medicine", folder / "adapter", settings)

    study.stage(f"train:{L}", config.training.model_dump(), [f"medicine:{L}", f"quantize:{L}"], train_stage)
    study.stage(f"treated:{L}", {"generation": config.generation.model_dump(), "problems": problem_digest},
                [f"train:{L}"], lambda f: _generate(_quantized_dir(study, q), problems, f / "attempts.jsonl", config,
                                                    console, adapter=study.folder(f"train:{L}") / "adapter"))

    def rejudge_stage(folder: Path) -> None:
        """The treated model's failures, judged as the untreated ones were (for the change in the category mix)."""
        from .commands_eval import load_graded
        from .compare import pair_key
        from .judging import run_judge_job

        fp_right = {pair_key(a) for a in load_graded(study.folder("generate:fp") / "attempts.jsonl") if a.correct}
        treated = load_graded(study.folder(f"treated:{L}") / "attempts.jsonl")
        failures = [a for a in treated if a.correct is False
                    and (config.judge.failures == "all" or pair_key(a) in fp_right)]
        write_records(folder / "failures.jsonl", failures)
        job = _judge_job(config, folder / "failures.jsonl", folder / "verdicts.jsonl", cache, config.judge.limit,
                         taxonomy)
        run_judge_job(job, console)

    study.stage(f"rejudge:{L}", judge_settings, [f"treated:{L}"], rejudge_stage)

    def evaluate_stage(folder: Path) -> None:
        from quantmedic.medicine.build import read_report

        from .commands_eval import load_graded
        from .recovery import evaluate_recovery, recovery_plot, to_json, to_markdown

        result = evaluate_recovery(
            load_graded(study.folder("generate:fp") / "attempts.jsonl"),
            load_graded(study.folder(f"generate:{L}") / "attempts.jsonl"),
            load_graded(study.folder(f"treated:{L}") / "attempts.jsonl"),
            medicine_keys=read_report(study.folder(f"medicine:{L}") / "medicine")["problem_keys"], seed=config.seed,
            verdicts_before=read_records(study.folder(f"judge:{L}") / "verdicts.jsonl", Verdict),
            verdicts_after=read_records(study.folder(f"rejudge:{L}") / "verdicts.jsonl", Verdict))
        write_atomic(folder / "recovery.json", [json.dumps(to_json(result), indent=2) + "\n"])
        write_atomic(folder / "recovery.md", [to_markdown(result)])
        recovery_plot(result, folder / "recovery.png")

    study.stage(f"evaluate:{L}", {}, ["generate:fp", f"generate:{L}", f"treated:{L}", f"medicine:{L}", f"judge:{L}",
                                     f"rejudge:{L}"], evaluate_stage)


def _review_stage(study: Study, q: QuantizationSpec, taxonomy) -> str:
    """Push the verdicts once, pull the reviews every run; wait until enough are submitted."""
    config, console, L = study.config, study.console, q.label
    name = f"review:{L}"
    a = config.argilla
    assert a is not None
    dataset = f"{a.dataset}-{L}"

    def target():
        from quantmedic.annotate.connection import ArgillaTarget

        return ArgillaTarget.from_options(a.api_url, os.environ.get(a.api_key_env), a.workspace)

    def push_stage(folder: Path) -> None:
        from quantmedic.annotate.push import plan_push, push

        verdicts = read_records(study.folder(f"judge:{L}") / "verdicts.jsonl", Verdict)
        plan = plan_push(verdicts, sample=a.sample, seed=config.seed)
        if not plan.sampled:
            raise StudyError(study.folder(f"judge:{L}") / "verdicts.jsonl", "no scored verdict to send to the "
                             f"annotators ({', '.join(f'{k}: {n}' for k, n in plan.skipped.items())})")
        summary = push(target(), dataset, plan, taxonomy, overlap=a.overlap, console=console)
        write_atomic(folder / "pushed.json", [json.dumps(summary, indent=2) + "\n"])

    # the push happens once per key; the pull on every run, since the humans' answers change
    if study.start is not None and STAGE_KINDS.index("review") < STAGE_KINDS.index(study.start):
        study.folder(name)
        return name
    key = digest(name, a.model_dump(exclude={"api_key_env", "api_url", "min_reviewed"}), [study.out(f"judge:{L}")]) \
        if study.state.get(f"judge:{L}", {}).get("status") == "done" else None
    if key is None or (study.until is not None and STAGE_KINDS.index("review") > STAGE_KINDS.index(study.until)):
        return name
    folder = study.root / "stages" / name.replace(":", "-") / key
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "pushed.json").is_file():
        study.console.rule(f"[bold]{name}: push")
        push_stage(folder)
    from quantmedic.annotate.pull import pull

    verdicts = read_records(study.folder(f"judge:{L}") / "verdicts.jsonl", Verdict)
    reviews, _counts = pull(target(), dataset, verdicts)
    pushed = json.loads((folder / "pushed.json").read_text())["records"]
    reviewed = len({r.verdict_id for r in reviews})
    write_records(folder / "reviews.jsonl", reviews)
    study.state[name] = {"key": key, "folder": str(folder.relative_to(study.root)),
                         "status": "done" if reviewed >= a.min_reviewed * pushed else "waiting",
                         "digest": file_digest(folder / "reviews.jsonl"), "reviewed": reviewed, "pushed": pushed}
    study._save()
    if study.state[name]["status"] == "waiting":
        study.log.append((name, "waiting"))
        raise WaitingForReviews(f"{name}: {reviewed} of {pushed} verdicts reviewed in Argilla dataset \"{dataset}\" "
                                f"({json.loads((folder / 'pushed.json').read_text()).get('url')}); the study goes on "
                                f"once {a.min_reviewed:.0%} are: run the same command again")
    study.log.append((name, f"{reviewed} of {pushed} reviewed"))
    return name


def _judge_eval_stage(study: Study, taxonomy, cache: Path) -> None:
    """The judge's meta-evaluation on ProcessBench's GSM8K split (``judge.eval_limit`` items; 0: off)."""
    config = study.config
    limit = config.judge.eval_limit
    if not limit:
        return

    def work(folder: Path) -> None:
        from .judge_eval import EvalJob, run_judge_eval
        from .shipped import shipped_path

        job = _judge_job(config, shipped_path("processbench-gsm8k"), None, cache, limit, taxonomy)
        job = dataclasses.replace(job, include_correct=True)
        run_judge_eval(EvalJob(judging=job, out_dir=folder, seed=config.seed), study.console)

    settings = {**config.judge.model_dump(exclude={"api_key_env", "concurrency", "failures", "limit"}),
                "taxonomy": f"{taxonomy.name}@{taxonomy.version}"}
    study.stage("judge-eval", settings, [], work)
