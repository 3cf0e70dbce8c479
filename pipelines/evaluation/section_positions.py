"""The error mix by position in the thinking: where in a reasoning model's trace the judge found the
first wrong section, per error category, in quarters of the trace.

A verdict counts when it is a diagnosis whose ``first_wrong_section`` is a section of its attempt's
thinking (``>= 0``); its relative position is ``first_wrong_section / number of sections``, in
``[0, 1)``, binned by :func:`quarter`. A verdict naming a section its attempt does not have is
counted in ``skipped``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from quantmedic.taxonomy.records import Verdict

QUARTERS = ("first quarter", "second quarter", "third quarter", "last quarter")
POSITION_HEADERS = ["category", "failures", *(f"{q} (share)" for q in QUARTERS)]
UNCATEGORISED = "(no category)"


def quarter(section: int, sections: int) -> int:
    """The quarter (0: first .. 3: last) of the trace that section ``section`` of ``sections`` starts in.

    >>> [quarter(i, 4) for i in range(4)], [quarter(i, 10) for i in (0, 2, 3, 5, 7, 9)], quarter(0, 1)
    ([0, 1, 2, 3], [0, 0, 1, 2, 2, 3], 0)
    """
    if not 0 <= section < sections:
        raise ValueError(f"section {section} is not one of {sections}")
    return min(3, 4 * section // sections)


@dataclass(frozen=True)
class PositionRow:
    """One category's first wrong sections, counted per quarter of the trace."""

    category: str
    counts: tuple[int, int, int, int]

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def shares(self) -> tuple[float, ...] | None:
        """Each quarter's share of this category's failures (None without any)."""
        return tuple(c / self.total for c in self.counts) if self.total else None


@dataclass(frozen=True)
class SectionPositionMix:
    """Per category (in name order) and over all of them (``all``); ``skipped``: diagnoses naming a section
    their attempt does not have."""

    rows: tuple[PositionRow, ...]
    all: PositionRow
    skipped: int

    @classmethod
    def of(cls, verdicts: Iterable[Verdict]) -> SectionPositionMix:
        """From any iterable of verdicts, in one pass."""
        counts: dict[str, list[int]] = {}
        skipped = 0
        for v in verdicts:
            index = v.first_wrong_section
            if not v.is_diagnosis or index is None or index < 0:
                continue
            sections = len(v.attempt.thinking.sections) if v.attempt.thinking is not None else 0
            if index >= sections:
                skipped += 1
                continue
            counts.setdefault(v.category or UNCATEGORISED, [0, 0, 0, 0])[quarter(index, sections)] += 1
        rows = tuple(PositionRow(c, tuple(n)) for c, n in sorted(counts.items()))  # type: ignore[arg-type]
        total = tuple(sum(r.counts[q] for r in rows) for q in range(4))
        return cls(rows, PositionRow("all", total), skipped)  # type: ignore[arg-type]

    def table(self) -> tuple[list[str], list[list]]:
        """Headers and rows: per category and for all, each quarter's count and share of the category."""
        rows = []
        for row in (*self.rows, self.all):
            shares = row.shares or (None,) * 4
            rows.append([row.category, row.total, *(f"{n} ({'–' if s is None else f'{100 * s:.0f}%'})"
                                                     for n, s in zip(row.counts, shares))])
        return POSITION_HEADERS, rows
