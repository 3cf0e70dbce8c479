"""``quantmedic check``: every attempt of an input through the deterministic step checker
(:mod:`quantmedic.judge.checker`), its findings written as JSONL.

The output is written atomically (:func:`quantmedic.taxonomy.jsonl.write_atomic`) while the attempts are checked,
one :class:`~quantmedic.judge.checker.Finding` per line, in input order; a run that fails leaves no output. Where
it writes is checked before the input is read. The claims only sympy decides are decided ahead, a chunk of attempts
at a time, by a pool of worker processes (:class:`~quantmedic.judge.checker_symbolic.SymbolicPool`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from quantmedic.taxonomy.jsonl import dump_line, write_atomic
from quantmedic.taxonomy.outputs import check_output_file
from quantmedic.taxonomy.records import Attempt

from .adapters import FORMATS, load_attempts
from .checker import CheckedAttempt, check_steps, symbolic_claims
from .checker_symbolic import SymbolicPool, prefetch

Progress = Callable[[int, int], None]


class CheckSettings(BaseModel):
    """What ``quantmedic check`` reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_format: str = Field("auto", description=f"The input's format: {', '.join(FORMATS)} (auto: detected "
                                                  "from the first record).")
    limit: int | None = Field(None, ge=1, description="Check at most this many attempts (the first ones).")


@dataclass
class CheckSummary:
    """What a check run saw: attempts, steps, claims checked and unreadable, findings, attempts with an error."""

    attempts: int = 0
    steps: int = 0
    claims: int = 0
    unparsed: int = 0
    symbolic: int = 0
    timeouts: int = 0
    findings: int = 0
    with_error: int = 0
    seconds: float = 0.0
    checked: list[CheckedAttempt] = field(default_factory=list, repr=False)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("inf")

    def add(self, result: CheckedAttempt) -> None:
        self.attempts += 1
        self.steps += result.steps
        self.claims += result.claims_checked
        self.unparsed += result.claims_unparsed
        self.symbolic += result.claims_symbolic
        self.timeouts += result.claims_timed_out
        self.findings += len(result.findings)
        self.with_error += result.checked_error is not None
        self.checked.append(result)

    def lines(self) -> list[tuple[str, str]]:
        """The summary as (label, value) rows."""
        return [("attempts", f"{self.attempts:,}"), ("steps", f"{self.steps:,}"), ("claims checked", f"{self.claims:,}"),
                ("claims not readable", f"{self.unparsed:,}"), ("claims decided by sympy", f"{self.symbolic:,}"),
                ("sympy timeouts (not readable)", f"{self.timeouts:,}"),
                ("findings (false claims)", f"{self.findings:,}"),
                ("attempts with a checked error", f"{self.with_error:,}"), ("steps/s", f"{self.steps_per_s:,.0f}")]


CHUNK = 64  # attempts whose sympy claims are decided together


def check_attempts(attempts: Sequence[Attempt], out: str | Path, progress: Progress | None = None,
                   workers: int | None = None) -> CheckSummary:
    """Check ``attempts`` and write their findings to ``out`` (JSONL, atomically, as they are found); sympy's
    claims in ``workers`` processes (default: up to 2, one per CPU)."""
    summary = CheckSummary()
    start = time.perf_counter()
    pool = SymbolicPool(workers or min(2, os.cpu_count() or 1))

    def chunks() -> Iterator[str]:
        for done, attempt in enumerate(attempts, start=1):
            if done % CHUNK == 1:
                prefetch([c for a in attempts[done - 1:done - 1 + CHUNK] for s in a.steps for c in symbolic_claims(s)],
                         pool)
            result = check_steps(attempt.id, attempt.steps)
            summary.add(result)
            for finding in result.findings:
                yield dump_line(finding)
            if progress is not None and (done % 100 == 0 or done == len(attempts)):
                progress(done, len(attempts))

    with pool:
        write_atomic(out, chunks())
    summary.seconds = time.perf_counter() - start
    return summary


def prepare_check(input: str | Path, out: str | Path, settings: CheckSettings) -> list[Attempt]:
    """The output checked, then the input read (any format ``judge`` reads): the attempts to check."""
    check_output_file(out, inputs=[input], what="findings")
    attempts = load_attempts(input, settings.input_format)
    return attempts if settings.limit is None else attempts[:settings.limit]


def run_check(input: str | Path, out: str | Path, settings: CheckSettings,
              progress: Progress | None = None) -> CheckSummary:
    """``quantmedic check``: :func:`prepare_check`, then :func:`check_attempts`."""
    return check_attempts(prepare_check(input, out, settings), out, progress)
