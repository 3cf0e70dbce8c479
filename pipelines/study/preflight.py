"""Everything a study will need, checked before it runs (``quantmedic run``, and all that ``--check`` does
beyond validating the config): every file and folder the config names, and the study folder.

The model and quantized checkpoints must be model folders (or Hub ids), a file of attempts must
read (all of it, in its detected format), the taxonomy, prompt and judge tokenizer files must
load, a benchmark or calibration file must hold problems, and the study folder must be creatable.
Paths are relative to the current folder, as the stages use them. Each problem is an
:class:`~quantmedic.taxonomy.errors.InputError` at the config's line and field, carrying the
named file's own error (its line and field too). Nothing is created, loaded from the network or
contacted: Hub ids and the Argilla server are left to the stages that use them.

A variant that cannot generate on this machine as configured (a method × bits × KV cache with no
kernel here and no ``simulate: true``, see :mod:`.runnable`) is refused by a run, in one line that
says what would work; ``--check`` (which may run elsewhere than the study) reports it as a note.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from quantmedic.judge.adapters import load_attempts
from quantmedic.judge.prompt import load_prompt
from quantmedic.judge.tokens import counting_with
from quantmedic.taxonomy.errors import InputError, yaml_line
from quantmedic.taxonomy.model import load_taxonomy
from quantmedic.taxonomy.outputs import check_output_folder

from quantmedic.pipelines.data import resolve_input
from quantmedic.pipelines.evaluation.benchmarks import SHIPPED_BENCHMARKS, load_benchmark
from quantmedic.pipelines.models.formats import Hardware
from quantmedic.pipelines.models.loading import check_model

from .config import StudyConfig
from .runnable import refusals


def _on_the_hub(name: str) -> bool:
    """Whether ``load_benchmark(name)`` would go to the Hugging Face Hub (not checked offline)."""
    return name not in SHIPPED_BENCHMARKS and not Path(name).exists() and Path(name).suffix not in (".jsonl", ".json")


def _check_attempts(source: str) -> None:
    """A file of attempts (or a shipped name) that exists and reads."""
    path = resolve_input(source)
    if not path.is_file():
        raise InputError(source, "no such file of attempts (nor a shipped name such as r1-kv3-math500-traces)",
                         usage=True)
    load_attempts(path)


def _checks(config: StudyConfig) -> list[tuple[str, Callable[[], object]]]:
    """``(field, check)`` for every file and folder the config names."""
    checks: list[tuple[str, Callable[[], object]]] = []
    if config.model.path:
        checks.append(("model.path", lambda: check_model(config.model.path)))
    if config.model.attempts:
        checks.append(("model.attempts", lambda: _check_attempts(config.model.attempts)))
    calibrations = set()
    for i, q in enumerate(config.quantizations):
        field = config.field_of(i)
        if q.attempts:
            checks.append((f"{field}.attempts", lambda a=q.attempts: _check_attempts(a)))
        if q.path:
            checks.append((f"{field}.path", lambda p=q.path: check_model(p)))
        elif not q.attempts and isinstance(q.calibration, str) and not _on_the_hub(q.calibration):
            calibration = f"{field}.calibration" if field != "matrix" else "matrix.settings.calibration"
            if (calibration, q.calibration, q.num_samples) not in calibrations:  # a matrix's cells share theirs
                calibrations.add((calibration, q.calibration, q.num_samples))
                checks.append((calibration, lambda q=q: load_benchmark(q.calibration, limit=q.num_samples)))
    if config.benchmark and not _on_the_hub(config.benchmark.name):
        checks.append(("benchmark.name", config.benchmark.load))
    if config.taxonomy is not None:
        checks.append(("taxonomy", lambda: load_taxonomy(config.taxonomy)))
    for i, prompt in enumerate(config.judge.prompts):
        checks.append((f"judge.prompts.{i}", lambda p=prompt: load_prompt(p)))
    if config.judge.tokenizer is not None:
        checks.append(("judge.tokenizer", lambda: counting_with(config.judge.tokenizer)))
    return checks


def check_study(config: StudyConfig, path: Path, text: str, root: Path, *, refuse: bool = True) -> list[str]:
    """Check what the study at ``path`` (config ``text``) needs, and its folder ``root``; raise the first problem.

    A variant that cannot generate here is the first problem when ``refuse`` (a run), else one of the notes
    returned (``--check``)."""
    check_output_folder(root, inputs=[path], what="study folder")
    notes = []
    generating = any(q.has_model for q in config.quantizations)  # else nothing runs: torch need not load
    for field, why in refusals(config, Hardware.detect()) if generating else []:
        if refuse:
            raise InputError(path, why, line=yaml_line(text, field), field=field)
        notes.append(f"{field}: {why}")
    for field, check in _checks(config):
        try:
            check()
        except ValueError as error:  # InputError (the named file's own), or a setting it does not take
            said = error.message if isinstance(error, InputError) and error.path.startswith("--") else str(error)
            raise InputError(path, said, line=yaml_line(text, field), field=field) from None
    return notes
