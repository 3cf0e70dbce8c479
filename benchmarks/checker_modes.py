"""Judge-eval F1 with the step checker off, as a hint and as a gate, for fixed judges and (optionally) the
embedded judge, on ProcessBench's GSM8K split: the figures that choose ``--checker``'s default.

The fixed judges are the fault server's (``tests/support/fault_server.py``, a stand-in that answers from the
prompt without a model): ``fault`` (always the step 1, clamped), ``say:-1:0.9`` (never an error) and
``say:0:0.9`` (always the first step). They ignore a hint, so ``hint`` shows only its conflict flags; the
gate changes what they are asked and which layer decides. ``--embedded N`` also runs the embedded
SmolLM2-135M judge (llama.cpp, about 13 s a request on 2 cores) on a subset: every item the checker fires on,
and the first N others with an error and N without (the modes differ only where the checker fires).

Run (from the repository root)::

    python benchmarks/checker_modes.py [--embedded 20] [--json modes.json]

This is a benchmark, not a test: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support.servers import fault_server  # noqa: E402

MODES = ("off", "hint", "gate")
FIXED = ("fault", "say:-1:0.9", "say:0:0.9")


def subset(folder: Path, others: int) -> Path:
    """ProcessBench GSM8K items the checker fires on, and the first ``others`` with an error and without."""
    from quantmedic.judge.checker import check_steps
    from quantmedic.pipelines.data import resolve_input

    items = json.loads(resolve_input("processbench-gsm8k").read_text())
    fired = [i for i in items if check_steps(i["id"], i["steps"]).checked_error is not None]
    rest = [i for i in items if i not in fired]
    chosen = fired + [i for i in rest if i["label"] >= 0][:others] + [i for i in rest if i["label"] < 0][:others]
    path = folder / "subset.json"
    path.write_text(json.dumps(chosen))
    print(f"embedded subset: {len(fired)} items the checker fires on, {len(chosen) - len(fired)} others")
    return path


def judge_eval(folder: Path, mode: str, judge: list[str], data: str = "processbench-gsm8k") -> dict:
    """One ``quantmedic judge-eval`` run: the scored row (the checker + judge row when the checker is on)."""
    out = folder / f"eval-{abs(hash((mode, *judge)))}"
    args = [sys.executable, "-m", "quantmedic.pipelines.cli", "judge-eval", data, "--out", str(out),
            "--checker", mode, "--cache", str(folder / "cache.sqlite"), "--bootstrap", "500", *judge]
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if done.returncode != 0:
        raise SystemExit(f"judge-eval failed ({mode}, {judge}): {done.stderr.strip().splitlines()[-1]}")
    metrics = json.loads((out / "metrics.json").read_text())
    row = metrics["ensemble"] or next(iter(metrics["judges"].values()))
    return {"mode": mode, "judge": judge[-1] if judge else "embedded", "items": row.get("n_items", metrics["n_items"]),
            "error_acc": row["error_accuracy"], "correct_acc": row["correct_accuracy"], "f1": row["f1"],
            "unscored": row.get("unscored")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedded", type=int, default=0, help="Also the embedded judge on this many items (0: no).")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, fault_server() as server:
        for judge in FIXED:
            for mode in MODES:
                rows.append(judge_eval(Path(tmp), mode, ["--base-url", server.base_url, "-m", judge]))
        if options.embedded:
            data = str(subset(Path(tmp), options.embedded))
            for mode in MODES:
                rows.append(judge_eval(Path(tmp), mode, [], data))
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}"  # noqa: E731
    print("| judge | checker | items | error acc. | correct acc. | F1 |\n|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['judge']} | {r['mode']} | {r['items']} | {pct(r['error_acc'])} | {pct(r['correct_acc'])} | "
              f"{pct(r['f1'])} |")
    if options.json:
        options.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
