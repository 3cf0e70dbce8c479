"""What the study report shows by deciding layer: which layer decided the verdicts (an LLM judge, the step
checker of ``judge --checker``, the degenerate-output rules), the error mix of each, the human-verified
diagnostic accuracy of each, and the medicine's pairs by the layer that decided their diagnosis.

Tables are ``(name, headers, rows)``, which :mod:`.report` makes its tables of (every one is also a CSV).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from quantmedic.annotate.report import DiagnosticReport
from quantmedic.taxonomy.records import Verdict

LAYERS = ("judge", "checker", "rules")
ACCURACY_HEADERS = ["quantization", "decided by", "verdicts reviewed", "diagnostic accuracy", "95% Wilson interval"]
MEDICINE_HEADERS = ["quantization", "decided by", "pairs"]


def pct(x) -> str:
    """A share as a percentage ('–': none); :mod:`.report` formats with it too."""
    return "–" if x is None else f"{100 * x:.1f}%"


def interval(pair) -> str:
    """A 95% interval ``(low, high)`` in percent ('–': none)."""
    return "–" if not pair else f"[{100 * pair[0]:.1f}, {100 * pair[1]:.1f}]"


def layer_mix(verdicts: Mapping[str, Sequence[Verdict]]) -> tuple[str, list[str], list[list]]:
    """The error-category mix per quantization and deciding layer: ``(name, headers, rows)``; each row is a
    quantization, a layer, its diagnoses, its conflicts with the step checker and the count per category.

    >>> from quantmedic.taxonomy.records import Attempt, Problem
    >>> a = Attempt(problem=Problem(text="x"), steps=("1 + 1 = 3",))
    >>> v = dict(attempt=a, status="ok", first_wrong_step=0, subtype="s", judge_model="j", taxonomy="t@1")
    >>> layer_mix({"q": [Verdict(category="execution", decided_by="checker", **v),
    ...                  Verdict(category="method", conflict=True, checked_step=0, **v)]})[2]
    [['q', 'judge', 1, 1, 0, 1], ['q', 'checker', 1, 0, 1, 0]]
    """
    mix = {(q, layer): Counter() for q, vs in verdicts.items() for layer in LAYERS}
    conflicts: Counter = Counter()
    for q, vs in verdicts.items():
        for v in vs:
            if v.is_diagnosis and v.category:
                mix[q, v.decided_by][v.category] += 1
                conflicts[q, v.decided_by] += v.conflict
    categories = sorted({c for counts in mix.values() for c in counts})
    rows = [[q, layer, sum(counts.values()), conflicts[q, layer], *(counts[c] for c in categories)]
            for (q, layer), counts in mix.items() if counts]
    return "categories_by_layer", ["model", "decided by", "diagnosed", "conflicts with the checker", *categories], rows


def layer_text(verdicts: Mapping[str, Sequence[Verdict]]) -> str:
    """One sentence per quantization whose verdicts another layer than the LLM judge decided ('' when none)."""
    said = []
    for q, vs in verdicts.items():
        counts = Counter(v.decided_by for v in vs if v.is_diagnosis)
        conflicts = sum(v.conflict for v in vs)
        if counts.get("checker") or conflicts:
            said.append(f"{q}: {counts.get('checker', 0)} diagnoses decided by the step checker, "
                        f"{counts.get('judge', 0)} by the LLM judge, {conflicts} conflicts between them")
    return "; ".join(said) + "." if said else ""


def accuracy_rows(q: str, report: DiagnosticReport) -> list[list]:
    """The human-verified diagnostic accuracy of ``q``'s verdicts per deciding layer."""
    return [[q, layer, r.n, pct(r.value), interval(None if r.value is None else (r.low, r.high))]
            for layer, r in report.by_layer.items()]


def medicine_rows(q: str, medicine: Mapping) -> list[list]:
    """The medicine's pairs per layer that decided their diagnosis (none for a medicine built before layers)."""
    return [[q, layer, n] for layer, n in medicine.get("decided_by", {}).items()]
