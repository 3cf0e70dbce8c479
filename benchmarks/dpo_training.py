"""Time and peak memory of DPO training on a medicine of 545 pairs, reported per pair.

The medicine is built with ``quantmedic.medicine`` from the shipped GSM8K solutions: the 6B model's
failures are the rejected side and the 175B model's correct solutions or the reference solutions the
chosen side. The verdicts stand in for a judge's (every failure diagnosed at step 0, one category);
they decide only which pairs are drawn, not how long training takes. Each base (the tiny local
model in fp32, NF4 via bitsandbytes, GPTQ via GPTQModel) trains one epoch in its own process, so
that the peak resident memory is that run's own.

    .venv/bin/python benchmarks/dpo_training.py --pairs 545 --bases fp32 nf4 gptq --json dpo.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_medicine(out: Path, pairs: int) -> Path:
    from quantmedic.judge.adapters import load_attempts
    from quantmedic.medicine.build import BuildSettings, MedicineInputs, build, write
    from quantmedic.pipelines.data import shipped_path
    from quantmedic.taxonomy.records import Verdict

    attempts = load_attempts(shipped_path("gsm8k-solutions"))
    failures = [a for a in attempts if "6b" in a.model and a.correct is False]
    verdicts = [Verdict(attempt=a, status="ok", first_wrong_step=0, category="execution",
                        subtype="computational_error", judge_model="benchmark", taxonomy="quantmedic-default@1")
                for a in failures]
    built, report = build(MedicineInputs(verdicts, attempts), BuildSettings(budget=pairs, strategy="uniform"))
    write(out, built, report, overwrite=True)
    return out


def run_one(base: str, medicine: str, work: str, batch_size: int) -> dict:
    from quantmedic.pipelines.training.dpo import DPOSettings, train_dpo
    from quantmedic.pipelines.models.quantize import quantize
    from tests.support.tiny_model import calibration_texts, tiny_model

    model = tiny_model()
    if base == "gptq":
        model = quantize(model, method="gptq", bits=4, group_size=128, calibration=calibration_texts(16),
                         out_dir=Path(work) / "gptq", tool="gptqmodel", num_samples=16, max_seq_length=256) and \
            Path(work) / "gptq"
    result = train_dpo(model, medicine, Path(work) / f"adapter-{base}",
                       DPOSettings(epochs=1, batch_size=batch_size, max_length=1024, qlora=base == "nf4",
                                   save_steps=10_000), overwrite=True)
    r = result.record
    return {k: r[k] for k in ("base_load", "pairs", "steps", "train_seconds", "seconds_per_pair", "peak_rss_gib",
                              "peak_gpu_gib", "device", "final_loss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=545)
    parser.add_argument("--bases", nargs="+", default=["fp32", "nf4", "gptq"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", nargs=3, metavar=("BASE", "MEDICINE", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, batch_size=args.batch_size)))
        return
    with tempfile.TemporaryDirectory() as work:
        medicine = make_medicine(Path(work) / "medicine", args.pairs)
        results = {}
        for base in args.bases:
            done = subprocess.run([sys.executable, __file__, "--one", base, str(medicine), work,
                                   "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
            results[base] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[base]
            print(f"{base:>5}: {r['pairs']} pairs, {r['steps']} steps, {r['train_seconds']:.1f} s "
                  f"({1000 * r['train_seconds'] / r['pairs']:.1f} ms/pair), peak RSS {r['peak_rss_gib']:.2f} GiB, "
                  f"final loss {r['final_loss']:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
