"""The review stage: push the verdicts to Argilla once per key, pull the submitted reviews on every
run, and hold the study there until ``argilla.min_reviewed`` of the pushed records are reviewed.

It is a *volatile* stage (its input is what the humans did since the last run): its digest is
that of the reviews pulled, so new reviews re-run the stages after it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from quantmedic.annotate.connection import ArgillaTarget
from quantmedic.annotate.pull import pull
from quantmedic.annotate.push import plan_push, push
from quantmedic.taxonomy.jsonl import read_records, write_atomic, write_records
from quantmedic.taxonomy.records import Verdict

from . import layout as L
from .engine import Study, StudyError, WaitingForReviews, file_digest
from .layout import stage_name as S


def review_stage(study: Study, label: str) -> str:
    """Run the review stage of quantization ``label``; returns its name (the medicine's input)."""
    a = study.config.seeded("argilla")
    name, dataset = S("review", label), f"{a.dataset}-{label}"
    verdicts_path = lambda: study.folder(S("judge", label)) / L.VERDICTS  # noqa: E731
    target = lambda: ArgillaTarget.from_options(a.api_url, os.environ.get(a.api_key_env), a.workspace)  # noqa: E731

    def work(folder: Path) -> str:
        verdicts = read_records(verdicts_path(), Verdict)
        if not (folder / L.PUSHED).is_file():
            study.console.rule(f"[bold]{name}: push")
            plan = plan_push(verdicts, a)
            if not plan.sampled:
                raise StudyError(verdicts_path(), "no scored verdict to send to the annotators "
                                 f"({', '.join(f'{k}: {n}' for k, n in plan.skipped.items())})")
            summary = push(target(), dataset, plan, study.taxonomy, a, console=study.console)
            write_atomic(folder / L.PUSHED, [json.dumps(summary, indent=2) + "\n"])
        pushed = json.loads((folder / L.PUSHED).read_text(encoding="utf-8"))
        reviews, _counts = pull(target(), dataset, verdicts)
        write_records(folder / L.REVIEWS, reviews)
        reviewed = len({r.verdict_id for r in reviews})
        study.note(name, reviewed=reviewed, pushed=pushed["records"])
        if reviewed < a.min_reviewed * pushed["records"]:
            raise WaitingForReviews(
                f"{name}: {reviewed} of {pushed['records']} verdicts reviewed in Argilla dataset \"{dataset}\" "
                f"({pushed.get('url')}); the study goes on once {a.min_reviewed:.0%} are: run the same command again")
        study.console.print(f"{name}: {reviewed} of {pushed['records']} reviewed", highlight=False)
        return file_digest(folder / L.REVIEWS)

    settings = a.model_dump(mode="json", exclude={"api_key_env", "api_url", "min_reviewed"})
    study.stage(name, settings, [S("judge", label)], work, volatile=True)
    return name
