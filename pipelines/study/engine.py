"""``quantmedic run STUDY.yaml``: every stage of a study, in dependency order, into one study folder.

Stages, per quantization ``Q`` (``generate:fp`` and ``judge-eval`` once)::

    quantize:Q → generate:fp, generate:Q → compare:Q → judge:Q (→ judge-eval) → review:Q
    → medicine:Q → train:Q → treated:Q → rejudge:Q → evaluate:Q

and for each extra seed ``S`` of ``seeds:`` (the checkpoint of quantize:Q is shared)::

    generate:fp@sS, generate:Q@sS → compare:Q@sS

Each stage's key is a hash of its settings and of what its inputs hold (the output digests of the
stages before it); its files go to ``stages/NAME/KEY/`` (see :mod:`.layout`). A stage whose key is
unchanged and finished is skipped; an edit changes the keys of the stages it affects and only they
run again (into new folders: earlier results are kept). Inside a stage, work resumes: generation
appends to its file, judge answers sit in ``cache/judge.sqlite``, training resumes from its
checkpoints. A stage with nothing to do is *skipped*, with its reason in ``state.json``: by
:meth:`Study.skip` when the config leaves it nothing (no checkpoint to train, no full-precision
side to compare with), or by its work raising :class:`SkipStage`. A *volatile* stage (``review``,
whose input is what humans did since) runs its work on every run and passes on a digest of what it
found. ``study.lock`` records versions, seeds and every stage key. The stages themselves, and
``run_study``, are in :mod:`.stages`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import write_atomic
from quantmedic.taxonomy.model import Taxonomy
from quantmedic.taxonomy.records import Problem

from quantmedic.pipelines.training.dpo import package_versions

from .config import StudyConfig
from .layout import DONE, JUDGE_CACHE, LOCK, SKIPPED, STAGE_KINDS, STATE, StudyFolder, kind_of

LOCKED_PACKAGES = ("quantmedic", "torch", "transformers", "trl", "peft", "bitsandbytes", "llmcompressor",
                   "compressed-tensors", "gptqmodel", "vllm", "datasets", "math-verify", "openai", "argilla")


class WaitingForReviews(Exception):
    """The review stage has pushed its verdicts and not enough reviews are in yet."""


class StudyError(InputError):
    """A stage cannot go on with what the earlier ones produced (the message says why)."""


class SkipStage(Exception):
    """Raised by a stage's work: nothing for it to do, and nothing after it needs it (the message says why)."""


def digest(*parts: Any) -> str:
    """A short SHA-256 of canonical JSON.

    >>> digest({"a": 1}) == digest({"a": 1}) != digest({"a": 2})
    True
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"


class Study(StudyFolder):
    """A study being run: its config, its folder's state, and the stage machinery."""

    def __init__(self, config: StudyConfig, data: dict, root: Path, console: Console, *, problems: list[Problem],
                 taxonomy: Taxonomy, start: str | None = None, until: str | None = None):
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(root)
        self.config, self.data, self.console = config, data, console
        self.problems, self.taxonomy = problems, taxonomy
        self.start, self.until = start, until
        self.cache = root / JUDGE_CACHE
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        self.log: list[tuple[str, str]] = []
        self.hardware: Any = None  # the machine the stages run on (formats.Hardware), set by run_study

    def save(self) -> None:
        """Write ``state.json`` and ``study.lock`` (atomically)."""
        write_atomic(self.root / STATE, [json.dumps(self.state, indent=2, sort_keys=True) + "\n"])
        lock = {"study": self.config.name, "config_digest": digest(self.data), "config": self.data,
                "seed": self.config.seed, "seeds": self.config.seed_list, "versions": package_versions(LOCKED_PACKAGES),
                "stages": {name: {k: s.get(k) for k in ("key", "status", "digest")} for name, s in self.state.items()}}
        write_atomic(self.root / LOCK, [json.dumps(lock, indent=2, sort_keys=True) + "\n"])

    def folder(self, name: str) -> Path:
        """The folder of a finished stage (an error when it has not finished, or was skipped)."""
        folder = self.finished(name)
        if folder is None:
            if name in self.skipped():
                raise StudyError(self.root, f"stage {name} was skipped ({self.skipped()[name]})", usage=True)
            raise StudyError(self.root, f"stage {name} has not finished; run the study without --from first",
                             usage=True)
        return folder

    def out(self, name: str) -> str:
        """What later stages see of ``name``: its output digest (``skipped`` for a stage skipped by the config)."""
        return self.state[name].get("digest", SKIPPED)

    def skipped_by_options(self, name: str) -> bool:
        """Whether ``--until`` or ``--from`` keeps stage ``name`` from running (``--from`` needs it finished)."""
        kind = STAGE_KINDS.index(kind_of(name))
        if self.until is not None and kind > STAGE_KINDS.index(self.until):
            return True
        if self.start is not None and kind < STAGE_KINDS.index(self.start):
            if name not in self.skipped():
                self.folder(name)  # must exist
            self.log.append((name, "not run (--from)"))
            return True
        return False

    def stage(self, name: str, settings: Any, inputs: list[str], work: Callable[[Path], str | None], *,
              volatile: bool = False) -> None:
        """Run ``work`` into the stage's folder unless the same key already finished there (a volatile
        stage's work runs every time). ``work`` returns its output's digest (default: the key)."""
        if self.skipped_by_options(name):
            return
        key = digest(name, settings, [self.out(i) for i in inputs])
        entry = self.state.get(name, {})
        folder = self.stage_dir(name, key)
        if not volatile and entry.get("key") == key and folder.is_dir() and entry.get("status") in (DONE, SKIPPED):
            self.log.append((name, "unchanged, skipped"))
            why = f" (it had nothing to do: {entry['reason']})" if entry["status"] == SKIPPED else ""
            self.console.print(f"[dim]{name}: unchanged, skipped{why}[/dim]", highlight=False)
            return
        if not volatile:  # a volatile stage says what it did itself (it runs every time)
            self.console.rule(f"[bold]{name}")
        folder.mkdir(parents=True, exist_ok=True)
        self.state[name] = {"key": key, "status": "running", "folder": str(folder.relative_to(self.root))}
        self.save()
        try:
            produced = work(folder)
        except WaitingForReviews:
            self.state[name]["status"] = "waiting"
            self.save()
            self.log.append((name, "waiting"))
            raise
        except SkipStage as nothing:
            self.state[name].update(status=SKIPPED, reason=str(nothing), digest=key)
            self.save()
            self.log.append((name, "ran"))
            self.console.print(f"{name}: nothing to do: {nothing}", highlight=False)
            return
        self.state[name].update(status=DONE, digest=produced or key)
        self.save()
        self.log.append((name, "refreshed" if volatile else "ran"))

    def skip(self, *names: str, reason: str) -> None:
        """Record that stages ``names`` are not run, and why (in ``state.json``; the report lists them), in one
        line."""
        names = tuple(n for n in names if self.until is None
                      or STAGE_KINDS.index(kind_of(n)) <= STAGE_KINDS.index(self.until))
        for name in names:
            if self.state.get(name) != {"status": SKIPPED, "reason": reason}:
                self.state[name] = {"status": SKIPPED, "reason": reason}
                self.save()
            self.log.append((name, "skipped"))
        if names:
            self.console.print(f"[dim]{', '.join(names)}: skipped: {reason}[/dim]", highlight=False)

    def note(self, name: str, **facts: Any) -> None:
        """Record facts about the running stage ``name`` in ``state.json`` (e.g. how many were reviewed)."""
        self.state[name].update(facts)
