"""Grading throughput of the process pool (``quantmedic.pipelines.evaluation.pool``, through
``quantmedic.pipelines.evaluation.grading.grade_attempts``) on real answers: the first N of the
2,638 shipped GSM8K model solutions, graded with math-verify.

For each worker count the whole call is timed (workers started, every item sent, graded and
returned, results collected), after one warm-up call that starts the fork server (a one-off
import of sympy and math-verify, reported separately). For reference, the same items are also
graded in this process with no pool (``grade_item`` in a loop): the pool's overhead is the gap. The
parent's CPU time per item and the 1-minute load average before each run are printed too: on a
shared machine, load from other processes moves the figures.

Run (from the repository root, with quantmedic importable)::

    python benchmarks/grading_throughput.py [--items 2000] [--workers 1 2] [--repeat 3] [--json out.json]

This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from quantmedic.judge.adapters import load_attempts
    from quantmedic.pipelines.data import shipped_path
    from quantmedic.pipelines.evaluation.grading import grade_attempts, grade_item, grade_item_of

    attempts = load_attempts(shipped_path("gsm8k-solutions"))[: args.items]
    start = time.perf_counter()
    grade_attempts(attempts[:4], workers=1, timeout=args.timeout)
    warm_up = time.perf_counter() - start

    items = [grade_item_of(a) for a in attempts]
    grade_item(items[0])
    start = time.perf_counter()
    serial = [grade_item(item) for item in items]
    in_process = len(items) / (time.perf_counter() - start)

    results: dict[str, object] = {
        "items": len(attempts), "cpus": os.cpu_count(), "python": platform.python_version(),
        "date": datetime.now(timezone.utc).date().isoformat(), "fork_server_start_s": round(warm_up, 2),
        "in_process_items_per_s": round(in_process, 1), "pool": {}}
    print(f"{len(attempts)} GSM8K answers, {os.cpu_count()} CPUs; fork server start (one-off): {warm_up:.2f} s")
    print(f"in process, no pool: {in_process:.1f} items/s")
    for workers in args.workers:
        rates, parent_ms, loads = [], [], []
        for _ in range(args.repeat):
            loads.append(os.getloadavg()[0])
            start, cpu = time.perf_counter(), time.process_time()
            graded = grade_attempts(attempts, workers=workers, timeout=args.timeout)
            rates.append(len(graded) / (time.perf_counter() - start))
            parent_ms.append(1000 * (time.process_time() - cpu) / len(graded))
            assert [g.correct for g in graded] == [s.correct for s in serial]  # same grades as in process
        results["pool"][str(workers)] = {  # type: ignore[index]
            "items_per_s": [round(r, 1) for r in rates], "median": round(statistics.median(rates), 1),
            "parent_cpu_ms_per_item": round(statistics.median(parent_ms), 3), "load_average_1min": loads}
        print(f"workers={workers}: median {statistics.median(rates):.1f} items/s "
              f"(runs: {', '.join(f'{r:.1f}' for r in rates)}); parent CPU "
              f"{statistics.median(parent_ms):.2f} ms/item; 1-min load before the runs: "
              f"{', '.join(f'{x:.1f}' for x in loads)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
