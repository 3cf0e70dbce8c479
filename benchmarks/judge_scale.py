"""Judging at scale in bounded memory: ``quantmedic judge`` over N synthesised attempts (default a
million) against an instant local OpenAI-compatible server (``tests/support/fault_server.py``, no
latency), then the same command again on the finished output.

Prints, from one run: items/s overall, the rate of the last tenth over the first tenth (flat cost:
near 1.0), the judge process's peak RSS, and the rerun's seconds (wall and CPU), peak RSS and requests
sent (it should send none), with the load average (the cores may be shared). The rate is read from the
verdicts file's partial (``.<out>.partial``) as it grows.

Run (from the repository root, with quantmedic installed)::

    python benchmarks/judge_scale.py [--items 1000000] [--concurrency 64]

This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_throughput import DATA, MODEL, start_fault_server  # noqa: E402


def write_attempts(path: Path, n: int) -> None:
    """``n`` distinct failed GSM8K attempts (copies get a marker in the problem text and their own id)."""
    from quantmedic.judge.adapters import iter_attempts

    failed = [a.model_dump(mode="json") for a in iter_attempts(DATA) if a.correct is False]
    with path.open("w") as handle:
        for i in range(n):
            record = dict(failed[i % len(failed)])
            record["problem"] = {**record["problem"], "text": f"{record['problem']['text']}\n(copy {i})", "id": ""}
            record["id"] = f"scale-{i}"
            handle.write(json.dumps(record) + "\n")


def lines_in(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


class LineCounter:
    """Counts the lines of a growing file, reading only what was added since the last call (a count that
    re-read the whole file each second would take the CPU the run is measured on)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.lines = path, 0, 0

    def __call__(self) -> int:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                added = handle.read()
        except FileNotFoundError:
            return 0
        self.offset += len(added)
        self.lines += added.count(b"\n")
        return self.lines


class Run(NamedTuple):
    """One ``quantmedic judge`` process: wall seconds, ``(time, verdicts so far)`` samples, stderr, and its own
    CPU seconds (user + system) and peak RSS in MB (from ``wait4``: this process alone, not the server)."""

    seconds: float
    samples: list[tuple[float, int]]
    stderr: str
    cpu: float
    peak_mb: float


def judge(args: list[str], partial: Path | None) -> Run:
    """Run ``quantmedic judge``, sampling the growth of ``partial`` (if given) once a second."""
    start, samples, sampled = time.perf_counter(), [], time.perf_counter()
    count = LineCounter(partial) if partial is not None else None
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "quantmedic.pipelines.cli", "judge", *args],
                                   stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "COLUMNS": "200"})
        while True:  # its end to 20 ms (a 1 s sleep would round the time up to a second)
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.02)
            if count is not None and time.perf_counter() - sampled >= 1.0:
                sampled = time.perf_counter()
                samples.append((sampled - start, count()))
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    if process.returncode != 0:
        raise SystemExit(f"judge failed ({process.returncode}):\n{stderr[-2000:]}")
    return Run(seconds, samples, stderr, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def tenth_rates(samples: list[tuple[float, int]], n: int) -> tuple[float, float]:
    """Items/s over the first and the last tenth of the ``n`` items, from the growth samples."""
    def time_at(count: float) -> float:
        for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
            if c0 <= count <= c1 and c1 > c0:
                return t0 + (t1 - t0) * (count - c0) / (c1 - c0)
        return samples[-1][0]
    tenth = n / 10
    return tenth / (time_at(tenth) - time_at(0.0001)), tenth / (time_at(n) - time_at(n - tenth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=64)
    options = parser.parse_args()
    n = options.items
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        attempts, out, cache = folder / "attempts.jsonl", folder / "verdicts.jsonl", folder / "cache.sqlite"
        write_attempts(attempts, n)
        with start_fault_server(0.0, 1024, folder / "server.log") as server:
            base_url = f"http://127.0.0.1:{server.port}/v1"
            args = [str(attempts), "--out", str(out), "--base-url", base_url, "-m", MODEL, "--cache", str(cache),
                    "--concurrency", str(options.concurrency)]
            first_run = judge(args, out.with_name(f".{out.name}.partial"))
            again = judge(args, None)
        seconds, samples = first_run.seconds, first_run.samples
        grown = [s for s in samples if s[1] > 0]  # the partial is folded into the output and removed at the end
        first, last = tenth_rates([(0.0, 0), *grown] if grown and grown[-1][1] >= n else [(0.0, 0), *grown, (seconds, n)], n)
        print(f"items {n}  concurrency {options.concurrency}  judged in {seconds:.0f} s ({n / seconds:.0f} items/s)")
        print(f"first tenth {first:.0f} items/s  last tenth {last:.0f} items/s  last/first {last / first:.2f}")
        print(f"peak RSS of the judge process {first_run.peak_mb:.0f} MB  verdicts written {lines_in(out)}")
        print(f"rerun of the finished run: {again.seconds:.1f} s ({again.cpu:.1f} s CPU, peak RSS "
              f"{again.peak_mb:.0f} MB); " + next((line.strip() for line in again.stderr.splitlines()
                                                  if "requests sent" in line), "no summary line"))
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
