"""Accuracy of the deterministic step checker (``quantmedic.judge.checker``) against labels, per data set.

For each data set: how often the checker fires on erroneous solutions and on correct ones (the false-fire rate,
target <= 1%), and on solutions with a human first-error label where it fires, the share whose checked error is
exactly the labelled step, at or after it (target >= 97%) and before it; each with Wilson's 95% interval
(``quantmedic.judge.checker_eval``). Then every misfire (a fire before the labelled first error, or on a correct
solution) with its claim and the step's text, for a human to judge whether the checker or the label is wrong.

Default data: the shipped ``processbench-gsm8k`` (human first-error labels), ``gsm8k-solutions`` and
``r1-kv3-math500-traces`` (final-answer grades only: a "false fire" there may be a real slip that did not change
the answer), and any other ProcessBench split found next to the shipped GSM8K one. Any file ``judge`` reads may be
named instead.

Run (from the repository root, with quantmedic importable)::

    python benchmarks/checker_accuracy.py [DATA ...] [--json out.json]

This is a benchmark, not a test: nothing here asserts a rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT = ("processbench-gsm8k", "gsm8k-solutions", "r1-kv3-math500-traces")


def _datasets(names: list[str]) -> list[tuple[str, Path]]:
    from quantmedic.pipelines.data import SHIPPED, shipped_path

    chosen = [(n, shipped_path(n) if n in SHIPPED else Path(n)) for n in names or DEFAULT]
    if not names:  # other ProcessBench splits (math, olympiadbench, omnimath) where the GSM8K one lies
        gsm8k = shipped_path("processbench-gsm8k")
        chosen += [(f"processbench-{p.stem}", p) for p in sorted(gsm8k.parent.glob("*.json")) if p != gsm8k]
    return chosen


def _print(name: str, evaluation, steps: dict[str, tuple[str, ...]]) -> None:
    from quantmedic.judge.checker_eval import checker_rows

    print(f"\n== {name}")
    for measure, value in checker_rows(evaluation):
        print(f"  {measure:56} {value}")
    print(f"  meets both targets: {evaluation.meets_targets}")
    for m in evaluation.misfires:
        label = "no label" if m.label is None else f"label {m.label} (0-based)"
        print(f"  -- {m.kind}: {m.item} ({m.attempt_id}), {label}, checked step {m.checked_error} (1-based) "
              f"of {len(steps[m.attempt_id])}")
        print(f"     claim: {m.claim()}")
        print(f"     step:  {' / '.join(m.text.split(chr(10)))[:400]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="*", help=f"shipped names or files (default: {', '.join(DEFAULT)})")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from quantmedic.judge.adapters import load_attempts
    from quantmedic.judge.checker_eval import evaluate_checker, to_json

    report = {}
    for name, path in _datasets(args.data):
        attempts = load_attempts(path, "auto")
        evaluation = evaluate_checker(attempts)
        _print(name, evaluation, {a.id: a.steps for a in attempts})
        report[name] = to_json(evaluation)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
