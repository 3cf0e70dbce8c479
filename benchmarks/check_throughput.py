"""Throughput of the deterministic step checker (``quantmedic.judge.checker.check_steps``) on real steps: the
2,638 shipped GSM8K model solutions and ProcessBench's 400 GSM8K solutions, checked in this process (one core).

Also prints what the checker found on them: how often it fires on solutions known to be right (GSM8K solutions
graded correct by their authors, ProcessBench items labelled -1), and on ProcessBench items with a labelled first
error, the share of fires at or after that step.

Run (from the repository root, with quantmedic importable)::

    python benchmarks/check_throughput.py [--repeat 3] [--json out.json]

This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.2f}%)" if whole else "0/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from quantmedic.judge.adapters import load_attempts
    from quantmedic.judge.checker import check_steps
    from quantmedic.pipelines.data import shipped_path

    gsm8k = load_attempts(shipped_path("gsm8k-solutions"))
    bench = load_attempts(shipped_path("processbench-gsm8k"))
    attempts = gsm8k + bench
    steps = sum(len(a.steps) for a in attempts)
    rates = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        results = {a.id: check_steps(a.id, a.steps) for a in attempts}
        rates.append(steps / (time.perf_counter() - start))
    error = {a.id: results[a.id].checked_error for a in attempts}
    correct = [a for a in gsm8k if a.correct]
    clean = [a for a in bench if a.label == -1]
    labelled = [a for a in bench if a.label is not None and a.label >= 0]
    fired = [a for a in labelled if error[a.id] is not None]
    report = {
        "steps": steps, "attempts": len(attempts), "steps_per_s": max(rates), "cpus": os.cpu_count(),
        "claims_checked": sum(r.claims_checked for r in results.values()),
        "claims_unparsed": sum(r.claims_unparsed for r in results.values()),
        "gsm8k_correct_fired": _share(sum(error[a.id] is not None for a in correct), len(correct)),
        "gsm8k_wrong_fired": _share(sum(error[a.id] is not None for a in gsm8k if a.correct is False),
                                    sum(a.correct is False for a in gsm8k)),
        "processbench_all_correct_fired": _share(sum(error[a.id] is not None for a in clean), len(clean)),
        "processbench_erroneous_fired": _share(len(fired), len(labelled)),
        "processbench_fires_at_or_after_label": _share(sum(error[a.id] - 1 >= a.label for a in fired), len(fired)),
    }
    for key, value in report.items():
        print(f"{key:40} {value:,.0f}" if isinstance(value, float) else f"{key:40} {value}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
