"""``quantmedic grade`` and ``quantmedic compare`` at scale: items per second, peak resident memory, and
how flat the throughput stays (the last tenth's rate over the first tenth's), on N synthetic attempts.

The attempts are the 2,638 shipped GSM8K model solutions (``pipelines/data/gsm8k/model_solutions.jsonl``)
cycled, copy k with ``sampling.sample_index = k`` and its own id, so every attempt is distinct and
pairs up: ``grade`` gets N attempts of both models, ``compare`` N of the 175B model's (full precision,
the authors' labels as grades) against N of the 6B model's. Each command runs in its own process
through the library functions the CLI calls (``grade_into`` over a streamed reader, with the pool's
per-item timeout on; ``write_comparison_files``), and that process reports its own peak RSS
(``ru_maxrss``). Tenths are timed from ``grade``'s progress callback, and for ``compare`` by counting
the attempts its reader yields (the reader used by ``write_comparison_files``, wrapped).

Run (from the repository root, with quantmedic importable)::

    python benchmarks/grading_scale.py [--n 1000000] [--grade-n N] [--workers 2] [--json out.json]

This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def synthesise(path: Path, n: int, models: tuple[str, ...] | None = None) -> None:
    """N attempts from the shipped GSM8K solutions (of ``models``, or all), cycled with their own sample index."""
    from quantmedic.judge.adapters import load_attempts
    from quantmedic.pipelines.data import shipped_path

    base = [a.model_dump(mode="json") for a in load_attempts(shipped_path("gsm8k-solutions"))
            if models is None or a.model in models]
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            record, copy = base[i % len(base)], i // len(base)
            handle.write(json.dumps({**record, "id": f"{record['id']}-{copy}",
                                     "sampling": {**record["sampling"], "sample_index": copy}},
                                    ensure_ascii=False) + "\n")


def _tenths(marks: list[float], n: int) -> dict:
    """Rates of the first and last tenth (items/s) and their ratio, from the times at each tenth."""
    first, last = (n / 10) / (marks[1] - marks[0]), (n / 10) / (marks[10] - marks[9])
    return {"first_tenth_per_s": round(first, 1), "last_tenth_per_s": round(last, 1),
            "last_over_first": round(last / first, 3),
            "tenths_per_s": [round((n / 10) / (b - a)) for a, b in zip(marks, marks[1:])]}


def one_grade(source: Path, out: Path, n: int, workers: int, timeout: float) -> dict:
    from quantmedic.judge.adapters import iter_attempts
    from quantmedic.pipelines.evaluation.graded_file import grade_into

    marks: list[float] = []
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:  # timed from the first graded item (the workers have started)
        if done and (not marks or done >= len(marks) * total / 10):
            marks.append(time.perf_counter())

    run = grade_into(lambda: iter_attempts(source), out, workers=workers, timeout=timeout, progress=progress)
    wall = time.perf_counter() - start
    return {"items": run.total, "wall_s": round(wall, 1), "items_per_s": round(run.total / wall, 1),
            "grading_s": round(marks[-1] - marks[0], 1), "grading_items_per_s": round(n / (marks[-1] - marks[0]), 1),
            "until_first_graded_s": round(marks[0] - start, 1),
            **_tenths(marks, n), "ungradable": sum(s.ungradable for s in run.summaries if s.label != "all")}


def one_compare(fp: Path, quant: Path, out: Path, n: int) -> dict:
    from quantmedic.judge import adapters
    from quantmedic.pipelines.evaluation import compare

    marks: dict[str, list[float]] = {}

    def timed(path, fmt="auto"):
        side = [time.perf_counter()]
        marks[f"{Path(path).stem} pass {sum(k.startswith(Path(path).stem) for k in marks) + 1}"] = side
        for i, attempt in enumerate(adapters.iter_attempts(path, fmt), start=1):
            if i % (n // 10) == 0:
                side.append(time.perf_counter())
            yield attempt

    compare.iter_attempts = timed  # the reader write_comparison_files streams each side with, timed
    start = time.perf_counter()
    comparison, _ = compare.write_comparison_files(fp, quant, out)
    wall = time.perf_counter() - start
    passes = {name: _tenths(m, n) for name, m in marks.items() if len(m) == 11}
    return {"pairs": comparison.paired, "wall_s": round(wall, 1), "pairs_per_s": round(n / wall, 1),
            "passes": passes, "right_to_wrong": len(comparison.right_to_wrong)}


def _child(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="attempts per compare side (and to grade)")
    parser.add_argument("--grade-n", type=int, help="attempts to grade (default: --n)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--skip", choices=("grade", "compare"), help="leave one command out")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, *rest = args.one
        result = (one_grade(Path(rest[0]), Path(rest[1]), int(rest[2]), int(rest[3]), float(rest[4]))
                  if kind == "grade" else one_compare(Path(rest[0]), Path(rest[1]), Path(rest[2]), int(rest[3])))
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(result))
        return
    grade_n = args.grade_n or args.n
    results: dict[str, object] = {"n": args.n, "grade_n": grade_n, "cpus": os.cpu_count(),
                                  "python": platform.python_version(), "load_average_1min": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="grading-scale-") as work:
        folder = Path(work)
        if args.skip != "grade":
            start = time.perf_counter()
            synthesise(folder / "attempts.jsonl", grade_n)
            print(f"synthesised {grade_n} attempts to grade in {time.perf_counter() - start:.0f} s", flush=True)
            results["grade"] = _child(["grade", str(folder / "attempts.jsonl"), str(folder / "graded.jsonl"),
                                       str(grade_n), str(args.workers), str(args.timeout)])
            print("grade:", json.dumps(results["grade"]), flush=True)
            for name in ("attempts.jsonl", "graded.jsonl"):
                (folder / name).unlink()
        if args.skip != "compare":
            synthesise(folder / "fp.jsonl", args.n, ("gsm8k-175b-verification",))
            synthesise(folder / "quant.jsonl", args.n, ("gsm8k-6b-finetuning",))
            results["compare"] = _child(["compare", str(folder / "fp.jsonl"), str(folder / "quant.jsonl"),
                                         str(folder / "report"), str(args.n)])
            print("compare:", json.dumps(results["compare"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
