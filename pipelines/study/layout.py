"""The study folder's layout, one contract for the engine, the stages and the report::

    STUDY_DIR/
      state.json                   each stage's key, status, folder and output digest (a skipped
                                   stage: status "skipped" and its reason)
      study.lock                   the config, seed, package versions and every stage key
      cache/judge.sqlite           every judge answer of the study (reruns resume from it)
      stages/KIND-LABEL/KEY/       one folder per stage and key (an edit makes a new one)

What each stage writes in its folder is named here; the file names of the library functions the
stages call (``write_comparison``, ``write_recovery``, the medicine export, the judge
meta-evaluation) are imported from the modules that write them.
"""

from __future__ import annotations

import json
from pathlib import Path

from quantmedic.judge import eval_job
from quantmedic.taxonomy.errors import InputError, read_text
from quantmedic.medicine import export as medicine_export
from quantmedic.pipelines.evaluation import compare, recovery

STAGE_KINDS = ("quantize", "generate", "compare", "judge", "judge-eval", "review", "medicine", "train", "treated",
               "rejudge", "evaluate")
FULL_PRECISION = "fp"
"""The label of the full-precision model's stages (``quantize:fp``, ``generate:fp``)."""

DONE, SKIPPED = "done", "skipped"
"""A stage's ``status`` in ``state.json`` once it finished, or was not run for a reason (its ``reason``)."""
STATE = "state.json"
LOCK = "study.lock"
STAGES = "stages"
JUDGE_CACHE = "cache/judge.sqlite"

MODEL = "model"                                # quantize: the quantized checkpoint (when it quantizes)
ATTEMPTS = "attempts.jsonl"                    # generate, treated: the graded attempts
COMPARISON = compare.COMPARISON_JSON           # compare: every file of write_comparison, among them
FLIPS_PNG = compare.FLIPS_PNG
FLIPPED_FAILURES = compare.FLIPPED_FAILURES    # ... what the judge judges (judge.failures: flipped)
ALL_FAILURES = compare.ALL_FAILURES            # ... or (judge.failures: all); rejudge: the treated failures
VERDICTS = "verdicts.jsonl"                    # judge, rejudge
JUDGE_EVAL_SUMMARY = eval_job.SUMMARY_MD       # judge-eval: the files of run_judge_eval, among them
JUDGE_EVAL_FIGURES = {"steps": eval_job.STEPS_PNG, "calibration": eval_job.CALIBRATION_PNG}
PUSHED = "pushed.json"                         # review: what was pushed, once per key
REVIEWS = "reviews.jsonl"                      # review: the reviews pulled on the last run
MEDICINE = "medicine"                          # medicine: the medicine folder (medicine.export's files)
MEDICINE_REPORT = f"{MEDICINE}/{medicine_export.REPORT}"
ADAPTER = "adapter"                            # train: the adapter folder
RECOVERY = recovery.RECOVERY_JSON              # evaluate: every file of write_recovery, among them
RECOVERY_PNG = recovery.RECOVERY_PNG
SEED_MARK = "@s"
"""Marks an extra seed's stages: ``generate:fp@s1``, ``generate:gptq-w4-g128@s1``, ``compare:gptq-w4-g128@s1``."""


def stage_name(kind: str, label: str | None = None) -> str:
    """``generate:gptq-w4-g128``, ``judge-eval``.

    >>> stage_name("generate", "fp"), stage_name("judge-eval")
    ('generate:fp', 'judge-eval')
    """
    if kind not in STAGE_KINDS:
        raise ValueError(f"unknown stage {kind!r}")
    return kind if label is None else f"{kind}:{label}"


def seed_label(label: str, seed: int) -> str:
    """``gptq-w4-g128@s1``: a label's stages for an extra seed.

    >>> seed_label("fp", 1), split_seed("gptq-w4-g128@s1"), split_seed("fp")
    ('fp@s1', ('gptq-w4-g128', 1), ('fp', None))
    """
    return f"{label}{SEED_MARK}{seed}"


def split_seed(label: str) -> tuple[str, int | None]:
    """``(label, seed)`` of a stage label (seed None: the primary seed's stage)."""
    base, mark, seed = label.rpartition(SEED_MARK)
    if mark and base and seed.lstrip("-").isdigit():
        return base, int(seed)
    return label, None


def kind_of(name: str) -> str:
    """The kind of a stage name: ``judge:gptq-w4-g128`` → ``judge``."""
    return name.split(":", 1)[0]


def read_json(path: Path) -> dict:
    """A JSON object file of the study folder; an undecodable, broken or non-object file is an :class:`InputError`."""
    try:
        data = json.loads(read_text(path, "study"))
    except json.JSONDecodeError as error:
        raise InputError(path, f"not valid JSON ({error.msg}); the study folder is damaged", line=error.lineno) from None
    if not isinstance(data, dict):
        raise InputError(path, "not a JSON object; the study folder is damaged")
    return data


class StudyFolder:
    """A study folder as its ``state.json`` says: which stages finished, and where their files are."""

    def __init__(self, root: Path):
        self.root = Path(root)
        path = self.root / STATE
        self.state: dict[str, dict] = read_json(path) if path.is_file() else {}

    def stage_dir(self, name: str, key: str) -> Path:
        return self.root / STAGES / name.replace(":", "-") / key

    def finished(self, name: str) -> Path | None:
        """The folder of stage ``name`` if it finished, else None."""
        entry = self.state.get(name)
        return self.root / entry["folder"] if entry and entry.get("status") == DONE else None

    def skipped(self) -> dict[str, str]:
        """The stages that were not run for a reason, and that reason (e.g. no checkpoint to train)."""
        return {name: entry.get("reason", "") for name, entry in self.state.items() if entry.get("status") == SKIPPED}

    def output(self, name: str, file: str) -> Path | None:
        """The path of ``file`` in the finished stage ``name``, if it is there."""
        folder = self.finished(name)
        return folder / file if folder is not None and (folder / file).exists() else None

    def quantizations(self) -> list[str]:
        """The labels of the quantizations that reached the compare stage (run or skipped); an extra seed's
        stages (``compare:LABEL@s1``) are not quantizations of their own."""
        return sorted({name.split(":", 1)[1] for name in self.state
                       if kind_of(name) == "compare" and split_seed(name.split(":", 1)[1])[1] is None})

    def seeds(self, label: str) -> dict[int | None, str]:
        """The generate stages of side ``label`` per seed: ``{None: "generate:LABEL", 1: "generate:LABEL@s1"}``."""
        found: dict[int | None, str] = {}
        for name in self.state:
            if kind_of(name) == "generate":
                base, seed = split_seed(name.split(":", 1)[1])
                if base == label:
                    found[seed] = name
        return found

    def lock(self) -> dict:
        path = self.root / LOCK
        return read_json(path) if path.is_file() else {}
