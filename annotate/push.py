"""``quantmedic annotate push``: verdicts → an Argilla dataset, with the judge's answers as suggestions.

Record ids are the verdict ids, so pushing again updates records instead of duplicating them. An
existing dataset whose settings do not match the taxonomy is refused before anything is written.

Conflicts go first: verdicts whose LLM judge disagrees with the step checker (``conflict``) are
always sent, ahead of all others, and count toward ``--sample`` (see :mod:`.sampling`). Argilla
shuffles each annotator's queue, so "first" is the insertion order (the UI's sort by insertion date)
and the ``conflict`` metadata (the UI's filter); the guidelines say so. Each record
shows the layer that decided it (LLM judge, step checker, rules) and the checker's checked step and
claim, in the judge's diagnosis field and as the metadata ``decided_by``, ``conflict`` and
``checked_step``. A dataset made before those metadata existed still takes pushes: its records show
the layer in the text only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from quantmedic.taxonomy.model import DEGENERATE, Taxonomy
from quantmedic.taxonomy.records import Verdict

from .connection import AnnotateError, ArgillaTarget, connect, workspace
from .sampling import STRATIFY, Sampled, stratified_sample
from .settings import (DEFAULT_MAX_STEPS, LAYER_METADATA, METADATA, WEIGHT, category_labels, guidelines, record_fields,
                       record_metadata,
                       record_suggestions, step_labels, subtype_labels)


class PushSettings(BaseModel):
    """What to send to the annotators and how many must answer: ``quantmedic annotate push`` takes its
    options' defaults and help from here, and a study's ``argilla:`` section embeds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample: int | None = Field(None, ge=1, description=(
        "Send only this many verdicts, drawn at random within strata (seeded); sampling weights are stored so the "
        "accuracy estimate stays unbiased. Conflicts between the LLM judge and the step checker are always sent "
        "first (weight 1) and count toward it."))
    stratify: str = Field("category", description="Strata for --sample: category, model or none.")
    seed: int = Field(0, description="Seed of the sample (in a study: the study's seed).")
    max_steps: int = Field(DEFAULT_MAX_STEPS, ge=1, description=(
        "Steps the step question offers (longer solutions are skipped)."))
    include_degenerate: bool = Field(False, description="Also send rule-detected degenerate outputs.")
    overlap: int = Field(1, ge=1, description="Annotators who must submit each record.")

    @field_validator("stratify")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in STRATIFY:
            raise ValueError(f"choose one of {', '.join(STRATIFY)}")
        return value


@dataclass(frozen=True)
class PushPlan:
    """What a push sends: the sampled verdicts, and what was left out and why."""

    sampled: tuple[Sampled, ...]
    skipped: dict[str, int]
    unrepresented: int = 0
    """Strata that got no draw (their verdicts cannot weigh in the estimate: raise --sample)."""


def plan_push(verdicts: Sequence[Verdict], settings: PushSettings = PushSettings()) -> PushPlan:
    """Keep scored diagnoses (not rule-detected degenerate ones unless asked), then sample: conflicts first."""
    max_steps, include_degenerate = settings.max_steps, settings.include_degenerate
    skipped: dict[str, int] = {}
    keep = []
    for verdict in verdicts:
        why = ("unscored" if verdict.status != "ok" else
               "degenerate" if verdict.category == DEGENERATE and not include_degenerate else
               f"longer than --max-steps {max_steps}" if len(verdict.attempt.steps) > max_steps else None)
        if why:
            skipped[why] = skipped.get(why, 0) + 1
        else:
            keep.append(verdict)
    sampled = tuple(stratified_sample(keep, settings.sample, settings.stratify, settings.seed))
    strata = {STRATIFY[settings.stratify](v) for v in keep if not v.conflict}  # conflicts: all sent
    return PushPlan(sampled, skipped, len(strata - {s.stratum for s in sampled}))


def dataset_settings(taxonomy: Taxonomy, *, max_steps: int = DEFAULT_MAX_STEPS, overlap: int = 1):
    """The Argilla settings: fields, questions, metadata, guidelines and task distribution."""
    import argilla as rg

    return rg.Settings(
        guidelines=guidelines(taxonomy),
        fields=[rg.TextField(name="problem", title="Problem", use_markdown=True),
                rg.TextField(name="solution", title="Solution (numbered steps)", use_markdown=True),
                rg.TextField(name="reference_answer", title="Reference answer", use_markdown=True, required=False),
                rg.TextField(name="judge_explanation", title="The judge's diagnosis", use_markdown=True)],
        questions=[rg.LabelQuestion(name="judge_correct", title="Is the judge right (step and category)?",
                                    labels={"yes": "Yes", "no": "No"}),
                   rg.LabelQuestion(name="first_wrong_step", title="First wrong step", labels=step_labels(max_steps),
                                    visible_labels=min(max_steps + 1, 20)),
                   rg.LabelQuestion(name="category", title="Error category", labels=category_labels(taxonomy)),
                   rg.LabelQuestion(name="subtype", title="Error subtype", labels=subtype_labels(taxonomy)),
                   rg.TextQuestion(name="comment", title="Comment", required=False)],
        metadata=[rg.TermsMetadataProperty(name=name) for name in METADATA]
                 + [rg.FloatMetadataProperty(name=WEIGHT, visible_for_annotators=False)],
        distribution=rg.TaskDistribution(min_submitted=overlap),
    )


def _shape(settings) -> dict:
    """The parts of settings that records depend on, comparable across datasets."""
    return {"fields": sorted(f.name for f in settings.fields),
            "questions": {q.name: sorted(getattr(q, "labels", None) or []) for q in settings.questions},
            "metadata": sorted(m.name for m in settings.metadata),
            "overlap": settings.distribution.min_submitted if settings.distribution else None}


def settings_conflicts(existing, wanted) -> list[str]:
    """How an existing dataset's settings differ from the wanted ones (empty: compatible)."""
    have, want = _shape(existing), _shape(wanted)
    if not set(LAYER_METADATA) & set(have["metadata"]):  # made before the layer metadata: the text shows them
        want["metadata"] = [name for name in want["metadata"] if name not in LAYER_METADATA]
    problems = []
    for part in ("fields", "metadata"):
        if have[part] != want[part]:
            problems.append(f"{part}: dataset has {have[part]}, the taxonomy needs {want[part]}")
    for name, labels in want["questions"].items():
        if name not in have["questions"]:
            problems.append(f'question "{name}" is missing')
        elif have["questions"][name] != labels:
            problems.append(f'question "{name}" has labels {have["questions"][name]}, needs {labels}')
    if have["overlap"] != want["overlap"]:
        problems.append(f"overlap: dataset has {have['overlap']}, asked for {want['overlap']}")
    return problems


def suggestion_agent(judge_model: str) -> str:
    """The judge's name as Argilla takes a suggestion's agent (letters, digits, ``-_:./`` and spaces): an
    ensemble's or the step checker's ``+`` becomes a space.

    >>> suggestion_agent("checker+Qwen/Qwen2.5-7B-Instruct")
    'checker Qwen/Qwen2.5-7B-Instruct'
    """
    return re.sub(r"[^A-Za-z0-9\-_:./\s]+", " ", judge_model).strip() or "judge"


def to_record(item: Sampled, metadata: Sequence[str] | None = None):
    """The Argilla record of ``item``; ``metadata``: the dataset's metadata names (None: all of ours)."""
    import argilla as rg

    verdict = item.verdict
    values = record_metadata(verdict, item.weight, item.stratum)
    agent = suggestion_agent(verdict.judge_model)
    suggestions = [rg.Suggestion(question_name=name, value=value, agent=agent, type="model", score=verdict.confidence)
                   for name, value in record_suggestions(verdict).items() if value is not None]
    return rg.Record(id=verdict.id, fields=record_fields(verdict),
                     metadata={k: v for k, v in values.items() if metadata is None or k in metadata},
                     suggestions=suggestions)


def push(target: ArgillaTarget, dataset_name: str, plan: PushPlan, taxonomy: Taxonomy,
         settings: PushSettings = PushSettings(), *, batch_size: int = 100, console: Console | None = None) -> dict:
    """Create (or check) the dataset and log the plan's records in batches; returns a summary."""
    import argilla as rg

    console = console or Console(stderr=True)
    client = connect(target)
    ws = workspace(client, target)
    wanted = dataset_settings(taxonomy, max_steps=settings.max_steps, overlap=settings.overlap)
    dataset = client.datasets(dataset_name, workspace=ws)
    created = dataset is None
    if created:
        dataset = rg.Dataset(name=dataset_name, workspace=ws, settings=wanted, client=client).create()
    else:
        conflicts = settings_conflicts(dataset.settings, wanted)
        if conflicts:
            raise AnnotateError(f'dataset "{dataset_name}" exists with other settings ({"; ".join(conflicts)}); '
                                "push to a new dataset name, or use the taxonomy and options it was made with")
    names = [m.name for m in dataset.settings.metadata]
    records = [to_record(item, names) for item in plan.sampled]
    with Progress(TextColumn("[bold]pushing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        task = progress.add_task("push", total=len(records))
        for start in range(0, len(records), batch_size):
            batch = records[start:start + batch_size]
            dataset.records.log(batch, batch_size=len(batch))
            progress.advance(task, len(batch))
    if plan.unrepresented:
        console.print(f"[yellow]warning:[/yellow] {plan.unrepresented} strata got no draw: the estimate cannot "
                      "cover them; raise --sample to at least the number of strata")
    return {"dataset": dataset_name, "workspace": ws.name, "created": created, "records": len(records),
            "skipped": plan.skipped, "url": f"{target.api_url}/dataset/{dataset.id}/annotation-mode"}
