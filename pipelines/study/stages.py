"""The stages of a study, one function each: every one calls the same library function as its CLI
command (``quantize``, ``generate``, ``compare``, ``judge``, ``judge-eval``, ``medicine build``,
``train dpo``, ``evaluate``) with the study's settings, into its stage folder (:mod:`.layout`).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from quantmedic.judge.eval_job import EvalJob, run_judge_eval
from quantmedic.judge.job import run_judge_job
from quantmedic.judge.settings import build_job
from quantmedic.medicine.build import EmptyMedicine, build_into, read_inputs, read_report
from quantmedic.judge.adapters import load_attempts
from quantmedic.pipelines.data import resolve_input, shipped_path
from quantmedic.pipelines.evaluation.compare import load_graded, pair_key, write_comparison
from quantmedic.pipelines.evaluation.grading import grade_file
from quantmedic.pipelines.evaluation.recovery import evaluate_recovery, write_recovery
from quantmedic.pipelines.models.generation import choose_backend, generate
from quantmedic.pipelines.models.generation_config import PARALLEL
from quantmedic.pipelines.models.formats import Hardware
from quantmedic.pipelines.models.quantize import quantize
from quantmedic.pipelines.training.dpo import train_dpo
from quantmedic.taxonomy.jsonl import read_records, write_records
from quantmedic.taxonomy.locks import exclusive_output
from quantmedic.taxonomy.model import load_taxonomy
from quantmedic.taxonomy.records import Verdict

from . import layout as L
from .config import QuantizationSpec, StudyConfig
from .engine import SkipStage, Study, StudyError, digest, file_digest
from .layout import FULL_PRECISION as FP, seed_label, stage_name as S
from .review import review_stage
from .runnable import backend_for

# judge settings that change how answers are fetched, not what they are: they do not key the stage
_OPERATIONAL = {"api_key_env", "concurrency", "timeout", "max_retries", "max_delay", "transport", "price_input",
                "price_output", "eval_limit"}


def run_study(config: StudyConfig, data: dict, root: Path, *, console: Console, start: str | None = None,
              until: str | None = None) -> Study:
    """Run (or resume) every stage; raises WaitingForReviews when the humans are not done."""
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_output(root, "study folder"):
        problems = config.benchmark.load() if config.benchmark else []
        study = Study(config, data, root, console, problems=problems, taxonomy=load_taxonomy(config.taxonomy),
                      start=start, until=until)
        study.hardware = Hardware.detect()
        _run(study)
    return study


def _run(study: Study) -> None:
    config, console = study.config, study.console
    model, attempts = config.model.path, config.model.attempts
    if model:
        study.stage(S("quantize", FP), {"path": model}, [], lambda _folder: digest(
            model, file_digest(Path(model) / "config.json"), file_digest(Path(model) / "model.safetensors")))
    if attempts:
        if not model:
            study.skip(S("quantize", FP), reason=f"its attempts are read from {attempts} (model.attempts)")
        attempts_stage(study, FP, attempts, "model.attempts")
    elif model:
        generate_stage(study, "generate", FP, model)
        for seed in config.seed_list[1:]:
            generate_stage(study, "generate", FP, model, seed=seed)
    else:
        study.skip(S("quantize", FP), S("generate", FP), reason=NO_FP)
    if len(config.seed_list) > 1 and config.generation.temperature == 0:
        console.print("[yellow]note:[/yellow] generation.temperature is 0 (greedy): every seed generates the same "
                      "attempts; sample (e.g. temperature: 0.6) for the seeds to differ")
    if config.judge.base_url == [] and study.until != "quantize":
        console.print("[yellow]note:[/yellow] the judge is the embedded SmolLM2-135M (weak): set judge.base_url "
                      "and judge.models for real diagnoses")
    for q in config.quantizations:
        quantization_stages(study, q)


NO_FP = "no full-precision side: model has neither path nor attempts"


def quantization_stages(study: Study, q: QuantizationSpec) -> None:
    """Every stage of one quantization, from quantizing to the recovery measured after treatment."""
    label, fp = q.label, study.config.has_full_precision
    i = study.config.quantizations.index(q)
    if q.attempts:
        if q.path:
            quantize_stage(study, q)
        else:
            study.skip(S("quantize", label), reason=f"its attempts are read from {q.attempts} "
                                                    f"(quantizations.{i}.attempts)")
        attempts_stage(study, label, q.attempts, f"quantizations.{i}.attempts", q)
    else:
        quantize_stage(study, q)
        generate_stage(study, "generate", label, None, q)
    if fp:
        compare_stage(study, label)
    else:
        study.skip(S("compare", label), reason=f"{NO_FP} (the judge takes all of {label}'s failures)")
    seed_stages(study, q)
    judge_stage(study, "judge", label)
    if label == study.config.quantizations[0].label:
        judge_eval_stage(study)
    reviews = review_stage(study, label) if study.config.argilla else None
    medicine_stage(study, q, reviews)
    if not q.has_model:
        why = (f"no checkpoint to treat: quantizations.{i} gives attempts and no path (give path, the quantized "
               "checkpoint, to train an adapter and re-evaluate)")
        study.skip(*(S(kind, label) for kind in ("train", "treated", "rejudge", "evaluate")), reason=why)
        return
    train_stage(study, q)
    generate_stage(study, "treated", label, None, q)
    judge_stage(study, "rejudge", label)
    if fp:
        evaluate_stage(study, label)
    else:
        study.skip(S("evaluate", label), reason=f"{NO_FP} (recovery is measured toward full precision)")


def seed_stages(study: Study, q: QuantizationSpec) -> None:
    """``generate:Q@sS`` and ``compare:Q@sS`` for each extra seed ``S`` (the checkpoint is the one of quantize:Q)."""
    config, label = study.config, q.label
    extra = config.seed_list[1:]
    if not extra:
        return
    if q.attempts:
        study.skip(*(S(k, seed_label(label, s)) for s in extra for k in ("generate", "compare")),
                   reason=f"its attempts are read from {q.attempts}: one run, not one per seed")
        return
    fp_generates = bool(config.model.path and not config.model.attempts)
    for seed in extra:
        generate_stage(study, "generate", label, None, q, seed=seed)
        if fp_generates:
            compare_stage(study, label, seed=seed)
        else:
            study.skip(S("compare", seed_label(label, seed)), reason="the full-precision side is not generated per "
                       "seed (model.attempts, or no model.path)")


def attempts_stage(study: Study, label: str, source: str, field: str, q: QuantizationSpec | None = None) -> None:
    """``generate:LABEL`` from a file of attempts instead of a model: read, kept to the benchmark's problems (when
    there is one), stamped with the quantization (a quantized side's attempts that record none), and graded."""
    name, path = S("generate", label), resolve_input(source)
    wanted = {p.id for p in study.problems}

    def work(folder: Path) -> None:
        attempts = load_attempts(path)
        if wanted:
            attempts = [a for a in attempts if a.problem.id in wanted]
            if not attempts:
                raise StudyError(path, f"none of its attempts is on a problem of benchmark "
                                 f"{study.config.benchmark.name} (problems match by text and source)", field=field)
        if q is not None:
            record = q.quantization_record()
            attempts = [a if a.quantization else a.model_copy(update={"quantization": record}) for a in attempts]
        write_records(folder / L.ATTEMPTS, attempts)
        grade_file(folder / L.ATTEMPTS, study.console)
        study.note(name, attempts=source, generated=False)
        study.console.print(f"{name}: {len(attempts)} attempts read from {source} (not generated; "
                            f"{sum(a.correct is True for a in load_graded(folder / L.ATTEMPTS))} correct)",
                            highlight=False)

    keyed = {"attempts": file_digest(path), "problems": digest(sorted(wanted)),
             "record": q.quantization_record().model_dump(mode="json") if q else None}
    study.stage(name, keyed, [], work)


def quantized_dir(study: Study, q: QuantizationSpec) -> str:
    """The quantized checkpoint: the given ``path``, or the one the quantize stage made."""
    return q.path if q.path else str(study.folder(S("quantize", q.label)) / L.MODEL)


def quantize_stage(study: Study, q: QuantizationSpec) -> None:
    def work(folder: Path) -> str | None:
        if q.path:
            return digest(q.path, file_digest(Path(q.path) / "config.json"))
        quantize(study.config.model.path, out_dir=folder / L.MODEL, settings=q)
        return None

    keyed = q.model_dump(mode="json", exclude={"attempts", "name", "record"})  # what quantizing depends on
    study.stage(S("quantize", q.label), keyed, [S("quantize", FP)], work)


def generate_stage(study: Study, kind: str, label: str, model: str | None, q: QuantizationSpec | None = None, *,
                   seed: int | None = None) -> None:
    """``generate:fp``, ``generate:Q`` (the quantized model) or ``treated:Q`` (with the trained adapter); with an
    extra ``seed``, ``generate:fp@sS`` / ``generate:Q@sS``, seeded ``S``."""
    config = study.config
    settings = config.seeded("generation")
    if seed is not None:
        settings = settings.model_copy(update={"seed": seed})
    serial = {k: type(settings).model_fields[k].default for k in PARALLEL}  # vLLM's parallelism, off
    if kind == "generate" and q is not None and (backend := backend_for(config, q, study.hardware)) != \
            choose_backend(settings.backend, settings.base_url):
        settings = settings.model_copy(update={"backend": backend, **serial})  # simulated here: transformers
    elif kind == "treated" and settings.backend == "auto":
        settings = settings.model_copy(update=serial)  # the adapter runs on transformers
    inputs = {"generate": [S("quantize", label)], "treated": [S("train", label)]}[kind]

    def work(folder: Path) -> None:
        path = model if q is None else quantized_dir(study, q)
        adapter = study.folder(S("train", label)) / L.ADAPTER if kind == "treated" else None
        generate(path, study.problems, out_path=folder / L.ATTEMPTS, settings=settings, adapter=adapter,
                 console=study.console)
        grade_file(folder / L.ATTEMPTS, study.console)

    unset = set(PARALLEL) - set(settings.parallelism())  # left out at vLLM's defaults: earlier studies' keys hold
    keyed = {"generation": settings.model_dump(mode="json", exclude=unset),
             "problems": digest([p.id for p in study.problems])}
    study.stage(S(kind, label if seed is None else seed_label(label, seed)), keyed, inputs, work)


def compare_stage(study: Study, label: str, *, seed: int | None = None) -> None:
    """``compare:Q`` (or, for an extra seed, ``compare:Q@sS``: that seed's sides)."""
    fp_side, side = (FP, label) if seed is None else (seed_label(FP, seed), seed_label(label, seed))

    def work(folder: Path) -> None:
        fp = load_graded(study.folder(S("generate", fp_side)) / L.ATTEMPTS)
        quant = load_graded(study.folder(S("generate", side)) / L.ATTEMPTS)
        write_comparison(fp, quant, folder, fp_label=study.config.model.label or None, quant_label=label)

    study.stage(S("compare", side), {}, [S("generate", fp_side), S("generate", side)], work)


def judge_stage(study: Study, kind: str, label: str) -> None:
    """``judge:Q``: the quantized model's failures; ``rejudge:Q``: the treated model's, judged the same way
    (for the change in the error-category mix)."""
    config = study.config

    compared = config.has_full_precision
    source = S("compare" if compared else "generate", label) if kind == "judge" else S("treated", label)

    def work(folder: Path) -> None:
        if kind == "judge" and compared:
            failures = study.folder(source) / (
                L.FLIPPED_FAILURES if config.judge.failures == "flipped" else L.ALL_FAILURES)
        else:  # the treated failures, or (no full-precision side to compare with) every quantized failure
            failures = folder / L.ALL_FAILURES
            write_records(failures, treated_failures(study, label) if kind == "rejudge" else
                          [a for a in load_graded(study.folder(source) / L.ATTEMPTS) if a.correct is False])
        job = build_job(config.seeded("judge"), input=failures, out=folder / L.VERDICTS, taxonomy=study.taxonomy,
                        cache=study.cache, limit=config.judge.limit)
        run_judge_job(job, study.console)

    settings = {**config.seeded("judge").model_dump(mode="json", exclude=_OPERATIONAL),
                "taxonomy": f"{study.taxonomy.name}@{study.taxonomy.version}"}
    study.stage(S(kind, label), settings, [source], work)


def treated_failures(study: Study, label: str) -> list:
    """The treated model's failures, chosen as ``judge.failures`` chose the untreated ones."""
    treated = load_graded(study.folder(S("treated", label)) / L.ATTEMPTS)
    if study.config.judge.failures == "all":
        return [a for a in treated if a.correct is False]
    fp_right = {pair_key(a) for a in load_graded(study.folder(S("generate", FP)) / L.ATTEMPTS) if a.correct}
    return [a for a in treated if a.correct is False and pair_key(a) in fp_right]


def judge_eval_stage(study: Study) -> None:
    """The judge's meta-evaluation on ProcessBench's GSM8K split (``judge.eval_limit`` items; 0: off)."""
    config = study.config
    if not config.judge.eval_limit:
        return

    def work(folder: Path) -> None:
        job = build_job(config.seeded("judge"), input=shipped_path("processbench-gsm8k"), out=None,
                        taxonomy=study.taxonomy, cache=study.cache, limit=config.judge.eval_limit,
                        include_correct=True)
        run_judge_eval(EvalJob(judging=job, out_dir=folder, seed=config.seed), study.console)

    settings = {**config.seeded("judge").model_dump(mode="json", exclude=_OPERATIONAL | {"failures", "limit"}),
                "eval_limit": config.judge.eval_limit, "taxonomy": f"{study.taxonomy.name}@{study.taxonomy.version}"}
    study.stage(S("judge-eval"), settings, [], work)


def medicine_stage(study: Study, q: QuantizationSpec, reviews_stage: str | None) -> None:
    """``medicine:Q``; an empty medicine stops the study, unless nothing could be trained with it anyway (no
    checkpoint): then the stage is skipped, with the reason."""
    config, label = study.config, q.label
    settings = config.seeded("medicine").model_copy(update={"reviews": reviews_stage is not None})
    sides = [S("generate", FP)] if config.has_full_precision else []
    sides.append(S("generate", label))

    def work(folder: Path) -> None:
        verdicts = study.folder(S("judge", label)) / L.VERDICTS
        attempts = [study.folder(side) / L.ATTEMPTS for side in sides]
        reviews = study.folder(reviews_stage) / L.REVIEWS if reviews_stage else None
        try:
            build_into(read_inputs([verdicts], attempts, reviews), settings, folder / L.MEDICINE, overwrite=True)
        except EmptyMedicine as empty:
            why = f"the medicine is empty: {empty.message.split(': ', 1)[-1]}"
            if not q.has_model:
                raise SkipStage(f"{why}; with no checkpoint there is nothing to treat with it anyway") from None
            raise StudyError(verdicts, f"{why} (a stronger judge, more problems or medicine.exclude_categories: [] "
                             "may help)") from None

    inputs = [S("judge", label), *sides] + ([reviews_stage] if reviews_stage else [])
    study.stage(S("medicine", label), settings.model_dump(mode="json"), inputs, work)


def train_stage(study: Study, q: QuantizationSpec) -> None:
    settings = study.config.seeded("training")

    def work(folder: Path) -> None:
        train_dpo(quantized_dir(study, q), study.folder(S("medicine", q.label)) / L.MEDICINE, folder / L.ADAPTER,
                  settings)

    study.stage(S("train", q.label), settings.model_dump(mode="json"),
                [S("medicine", q.label), S("quantize", q.label)], work)


def evaluate_stage(study: Study, label: str) -> None:
    def work(folder: Path) -> None:
        def attempts(kind: str, of: str = label):
            return load_graded(study.folder(S(kind, of)) / L.ATTEMPTS)

        def verdicts(kind: str):
            return read_records(study.folder(S(kind, label)) / L.VERDICTS, Verdict)

        result = evaluate_recovery(
            attempts("generate", FP), attempts("generate"), attempts("treated"),
            medicine_keys=read_report(study.folder(S("medicine", label)) / L.MEDICINE)["problem_keys"],
            seed=study.config.seed, verdicts_before=verdicts("judge"), verdicts_after=verdicts("rejudge"))
        write_recovery(result, folder)

    inputs = [S("generate", FP), S("generate", label), S("treated", label), S("medicine", label), S("judge", label),
              S("rejudge", label)]
    study.stage(S("evaluate", label), {}, inputs, work)

