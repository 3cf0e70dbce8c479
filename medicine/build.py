"""``quantmedic medicine build``: verdicts (+ reviews) + attempts → a targeted preference dataset folder.

Steps, in order: resolve the diagnoses (reviews win; a conflict between the LLM judge and the step
checker only through a review), drop problems of the evaluation split (the
contamination guard), draw failures by strategy under the budget, pair each with a correct
solution (a reasoning model's failed trace with a correct trace), measure the pairs' lengths, export. The folder is written next to its final place and renamed in one move; a rerun
with the same inputs and settings finds it done, and a different build never overwrites it
unless asked to.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from quantmedic.judge.adapters import load_attempts
from quantmedic.taxonomy.errors import InputError, read_text
from quantmedic.taxonomy.jsonl import read_records
from quantmedic.taxonomy.records import Attempt, ChosenSource, Problem, Review, Verdict

from . import export
from .contamination import problem_key, problem_keys
from .diagnoses import Diagnosis, resolve
from .lengths import length_report
from .pairs import CHOSEN_SOURCES, build_pairs
from .selection import Strategy, select


class BuildSettings(BaseModel):
    """How to build the medicine (recorded in ``medicine.json`` and the card); ``quantmedic medicine
    build`` takes its options' defaults and help from here, and a study's ``medicine:`` section is one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    budget: int = Field(545, ge=1, description="Number of pairs to draw (the reference study used 545).")
    strategy: Strategy = Field("error-weighted", description=(
        "error-weighted (categories in proportion to their share of the failures), stratified (equal shares) or "
        "uniform."))
    seed: int = Field(0, description="Seed of the draw (in a study: the study's seed).")
    chosen: tuple[ChosenSource, ...] = Field(CHOSEN_SOURCES, min_length=1, description=(
        "Where chosen solutions come from, in order of preference: full-precision, resample, reference."))
    step_level: bool = Field(False, description=(
        "Pairs that share the solution up to the first wrong step and differ from there (where a correct solution "
        "shares that prefix; else a whole-solution pair, counted)."))
    max_per_problem: int = Field(1, ge=1, description="Failures drawn per problem at most.")
    exclude_categories: tuple[str, ...] = Field((), description="Error categories left out (e.g. degenerate).")
    allow_eval_overlap: bool = Field(False, description="Keep failures on --eval-split problems (reported).")
    allow_chosen_without_thinking: bool = Field(False, description=(
        "Let a reasoning model's failed trace be paired with a chosen side without thinking (an attempt without it, "
        "or the reference solution); refused by default (counted), since such pairs teach the model to stop "
        "thinking."))
    tokenizer: str | None = Field(None, description=(
        "Tokenizer (the model to train: a folder or Hub id) to count the pairs' tokens with, through its chat "
        "template as `train dpo` does; without it medicine.json gives characters and estimated tokens."))
    prefer_checker: bool = Field(True, description=(
        "Where the budget must choose among equally eligible failures, take those the step checker decided "
        "(`judge --checker`: a computation proven false, no earlier step found wrong) first. On by default: those "
        "diagnoses are exact, the category shares stay as drawn, and verdicts without a checker decision draw as "
        "before; --no-prefer-checker keeps the subtypes within execution as a random draw gives them."))
    reviews: bool = Field(False, description="Whether human reviews decided the diagnoses (set from the inputs).")

    @model_serializer(mode="wrap")
    def _default_preference_unsaid(self, handler):
        """prefer_checker at its default is left out of the dump, so that builds and study stages made before it
        keep their fingerprints (it changes nothing without checker-decided verdicts)."""
        data = handler(self)
        if self.prefer_checker and isinstance(data, dict):
            data.pop("prefer_checker", None)
        return data


@dataclass
class MedicineInputs:
    """What the build reads, already parsed."""

    verdicts: list[Verdict]
    attempts: list[Attempt]
    reviews: list[Review] | None = None
    eval_problems: list[Problem] | None = None
    files: dict[str, Any] = field(default_factory=dict)


def read_inputs(verdicts: Sequence[Path], attempts: Sequence[Path], reviews: Path | None = None,
                eval_problems: list[Problem] | None = None) -> MedicineInputs:
    """Read the files (errors name the file, line and field)."""
    all_verdicts = [v for path in verdicts for v in read_records(path, Verdict)]
    all_attempts = [a for path in attempts for a in load_attempts(path)]
    review_list = read_records(reviews, Review) if reviews else None
    files = {"verdicts": [str(p) for p in verdicts], "attempts": [str(p) for p in attempts],
             "reviews": str(reviews) if reviews else None}
    return MedicineInputs(all_verdicts, all_attempts, review_list, eval_problems, files)


def guard(diagnoses: list[Diagnosis], eval_problems: list[Problem] | None,
          allow: bool) -> tuple[list[Diagnosis], dict[str, Any]]:
    """Drop the diagnoses whose problem is in the evaluation split (unless ``allow``), and say what happened."""
    if eval_problems is None:
        return diagnoses, {"checked": False, "summary": "no evaluation split was given; `quantmedic evaluate` leaves "
                                                        "the medicine's problems out of its measurements"}
    keys = problem_keys(eval_problems)
    overlapping = [d for d in diagnoses if problem_key(d.attempt.problem) in keys]
    n_problems = len({d.attempt.problem.id for d in overlapping})
    report = {"checked": True, "evaluation_problems": len(keys), "overlapping_failures": len(overlapping),
              "overlapping_problems": n_problems, "allowed": allow}
    if allow:
        report["summary"] = (f"{len(overlapping)} failures on {n_problems} problems of the evaluation split were "
                             "KEPT (--allow-eval-overlap): accuracy measured on those problems is contaminated")
        return diagnoses, report
    report["summary"] = (f"{len(overlapping)} failures on {n_problems} of the {len(keys)} evaluation problems "
                         "were left out")
    kept = [d for d in diagnoses if problem_key(d.attempt.problem) not in keys]
    return kept, report


def fingerprint(inputs: MedicineInputs, settings: BuildSettings) -> str:
    """A hash of everything the medicine depends on: the records read and the settings."""
    digest = hashlib.sha256()
    for v in inputs.verdicts:
        located = (v.first_wrong_step, v.category, v.subtype) + ((v.first_wrong_section, v.scope)
                                                                  if v.scope != "solution" else ())
        digest.update(v.id.encode() + v.status.encode() + str(located).encode())
        if v.decided_by == "checker" or v.conflict:  # only then: the fingerprints of other verdicts stay
            digest.update(f"{v.decided_by}{v.conflict}".encode())
    for a in inputs.attempts:
        digest.update(a.id.encode() + str(a.correct).encode())
    for r in inputs.reviews or ():
        digest.update(r.model_dump_json(exclude={"verdict"}).encode())
    for p in inputs.eval_problems or ():
        digest.update(problem_key(p).encode())
    digest.update(json.dumps(settings.model_dump(mode="json"), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def build(inputs: MedicineInputs, settings: BuildSettings) -> tuple[list, dict[str, Any]]:
    """The pairs and the build report (pure: no files touched)."""
    diagnoses, skipped = resolve(inputs.verdicts, inputs.reviews)
    excluded = Counter(d.category for d in diagnoses if d.category in settings.exclude_categories)
    diagnoses = [d for d in diagnoses if d.category not in settings.exclude_categories]
    for category, n in excluded.items():
        skipped[f"category {category} excluded"] += n
    diagnoses, contamination = guard(diagnoses, inputs.eval_problems, settings.allow_eval_overlap)
    selection = select(diagnoses, settings.budget, settings.strategy, seed=settings.seed,  # type: ignore[arg-type]
                       max_per_problem=settings.max_per_problem, prefer_checker=settings.prefer_checker)
    pairs, notes = build_pairs(selection.chosen, inputs.attempts, order=settings.chosen, step_level=settings.step_level,
                               allow_chosen_without_thinking=settings.allow_chosen_without_thinking)
    taxonomies = sorted({v.taxonomy for v in inputs.verdicts})
    report = {
        "quantmedic_version": importlib.metadata.version("quantmedic"),
        "fingerprint": fingerprint(inputs, settings),
        "settings": {**settings.model_dump(mode="json"), "prefer_checker": settings.prefer_checker},
        "inputs": {**inputs.files, "verdicts_read": len(inputs.verdicts), "attempts_read": len(inputs.attempts),
                   "reviews_read": len(inputs.reviews) if inputs.reviews is not None else None},
        "taxonomy": ", ".join(taxonomies),
        "diagnoses": len(diagnoses),
        "skipped": dict(sorted(skipped.items())),
        "contamination": contamination,
        "selection": {"available": selection.available, "allocated": selection.allocated,
                      "selected": len(selection.chosen)},
        "pairs": len(pairs),
        "pair_notes": dict(sorted(notes.items())),
        "categories": dict(Counter(p.category for p in pairs).most_common()),
        "chosen_sources": dict(Counter(p.chosen_source for p in pairs).most_common()),
        "kinds": dict(Counter(p.kind for p in pairs).most_common()),
        **pair_layers(pairs, selection.chosen),
        "lengths": length_report(pairs, settings.tokenizer),
        "problem_keys": sorted({problem_key(d.attempt.problem) for d in selection.chosen}),
    }
    return pairs, report


def pair_layers(pairs: list, chosen: Sequence[Diagnosis]) -> dict[str, Any]:
    """Which layer decided each pair's diagnosis (the pairs carry the verdict id, not the layer): pairs per layer
    (judge, checker, rules; ``human`` where a review corrected the diagnosis) and the checker-decided pairs' ids."""
    layer = {d.verdict.id: "human" if d.source == "human-corrected" else d.decided_by for d in chosen}
    return {"decided_by": dict(Counter(layer.get(p.verdict_id, "judge") for p in pairs).most_common()),
            "checker_decided_pairs": sorted(p.id for p in pairs if layer.get(p.verdict_id) == "checker")}


def write(out_dir: str | Path, pairs: list, report: dict[str, Any], *, overwrite: bool = False) -> str:
    """Write the folder; returns ``written``, or ``unchanged`` when the same build is already there."""
    out_dir = Path(out_dir)
    existing = out_dir / export.REPORT
    if existing.is_file():
        try:
            if json.loads(existing.read_text(encoding="utf-8")).get("fingerprint") == report["fingerprint"]:
                return "unchanged"
        except json.JSONDecodeError:
            pass
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(out_dir, "is not empty and holds another build; choose another --out or pass --overwrite",
                         field="--out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    export.save(tmp, pairs, report)
    old = out_dir.with_name(f".{out_dir.name}.old")
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return "written"


def read_report(medicine_dir: str | Path) -> dict[str, Any]:
    """The ``medicine.json`` of a medicine folder."""
    path = Path(medicine_dir) / export.REPORT
    if not path.is_file():
        raise InputError(medicine_dir, "is not a medicine folder (no medicine.json); build one with "
                                       "`quantmedic medicine build`", usage=True)
    try:
        report = json.loads(read_text(path, "medicine report"))
    except json.JSONDecodeError as error:
        raise InputError(path, f"not valid JSON ({error.msg}): rebuild the medicine", line=error.lineno) from None
    if not isinstance(report, dict) or not isinstance(report.get("problem_keys"), list):
        raise InputError(path, "is not a medicine report (no problem_keys): rebuild the medicine", field="problem_keys")
    return report


class EmptyMedicine(InputError):
    """No preference pair could be made (the message says why; ``report`` is the build's report)."""

    def __init__(self, path: str | Path, report: dict[str, Any]):
        super().__init__(path, "no preference pair could be made: " + why_none(report))
        self.report = report


def why_none(report: dict[str, Any]) -> str:
    """Why a build made no pair, from its report's counts."""
    reasons = {**report["skipped"], **report["pair_notes"]}
    if report["diagnoses"] == 0:
        return "no usable diagnosis (" + (", ".join(f"{k}: {n}" for k, n in reasons.items()) or "no verdicts") + ")"
    return ", ".join(f"{k}: {n}" for k, n in reasons.items()) or "nothing selected"


def build_into(inputs: MedicineInputs, settings: BuildSettings, out_dir: str | Path, *,
               overwrite: bool = False) -> tuple[list, dict[str, Any], str]:
    """Build the medicine and write its folder: ``(pairs, report, "written" | "unchanged")``; raises
    :class:`EmptyMedicine` when no pair could be made."""
    pairs, report = build(inputs, settings)
    if not pairs:
        raise EmptyMedicine((inputs.files.get("verdicts") or [out_dir])[0], report)
    return pairs, report, write(out_dir, pairs, report, overwrite=overwrite)
