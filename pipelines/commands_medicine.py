"""The ``medicine build``, ``train dpo`` and ``evaluate`` commands: ``register(app)`` adds them.

Heavy imports (datasets, torch, TRL) happen inside the commands, so ``quantmedic --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from quantmedic.taxonomy.errors import InputError

_stderr = Console(stderr=True)
medicine_app = typer.Typer(no_args_is_help=True, help="Build the [bold]medicine[/bold]: a targeted DPO preference "
                                                      "dataset from diagnosed failures.")
train_app = typer.Typer(no_args_is_help=True, help="[bold]Train[/bold] adapters on a medicine.")


def _require(modules: tuple[str, ...], extra: str) -> None:
    """Exit 2 with the install line when an optional dependency is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        _stderr.print(f"[red]error:[/red] this command needs {', '.join(missing)}: pip install "
                      f"\"quantmedic[{extra}]\"", highlight=False)
        raise typer.Exit(2)


def _split_csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@medicine_app.command("build", epilog="Writes into --out: README.md (dataset card), data/train-*.parquet, hf/ "
                                      "(save_to_disk), pairs.jsonl, medicine.json. Exit codes: 0 built (or already "
                                      "built), 2 bad input or no pair could be made.")
def build_command(
    verdicts: Annotated[list[Path], typer.Option("--verdicts", "-v", help="Verdicts JSONL from `quantmedic judge` "
                                                                          "(repeatable).")],
    attempts: Annotated[list[Path], typer.Option("--attempts", "-a", help="Graded attempts to take correct "
        "solutions from: the full-precision model's, resamples of the quantized model (repeatable; any format "
        "`quantmedic judge` reads).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the medicine.")],
    reviews: Annotated[Optional[Path], typer.Option("--reviews", "-r", help="Reviews JSONL from `quantmedic "
        "annotate pull`: then only human-accepted or corrected verdicts are used, and corrections win.")] = None,
    budget: Annotated[int, typer.Option(min=1, help="Number of pairs to draw (the reference study used 545).")] = 545,
    strategy: Annotated[str, typer.Option(help="error-weighted (categories in proportion to their share of the "
                                               "failures), stratified (equal shares) or uniform.")] = "error-weighted",
    seed: Annotated[int, typer.Option(help="Seed of the draw.")] = 0,
    chosen: Annotated[str, typer.Option(help="Where chosen solutions come from, in order of preference: "
                                             "full-precision, resample, reference.")] = "full-precision,resample,reference",
    step_level: Annotated[bool, typer.Option("--step-level", help="Pairs that share the solution up to the first "
        "wrong step and differ from there (where a correct solution shares that prefix; else a whole-solution "
        "pair, counted).")] = False,
    eval_split: Annotated[Optional[list[str]], typer.Option("--eval-split", help="Problems you will evaluate on "
        "(a shipped benchmark, a JSONL file or a Hugging Face dataset; repeatable): they are kept out of the "
        "medicine.")] = None,
    allow_eval_overlap: Annotated[bool, typer.Option("--allow-eval-overlap", help="Keep failures on --eval-split "
                                                                                  "problems (reported).")] = False,
    max_per_problem: Annotated[int, typer.Option(min=1, help="Failures drawn per problem at most.")] = 1,
    exclude_category: Annotated[Optional[list[str]], typer.Option("--exclude-category", help="Leave out failures "
        "of this category (repeatable), e.g. degenerate.")] = None,
    push_to_hub: Annotated[Optional[str], typer.Option("--push-to-hub", help="Also upload to this Hub dataset repo "
                                                                             "(user/name); token from $HF_TOKEN.")] = None,
    private: Annotated[bool, typer.Option("--private", help="Make the Hub repo private.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a different medicine in --out.")] = False,
) -> None:
    """[bold]Build[/bold] DPO preference pairs from diagnosed failures: targeted by error category, with lineage, as a Hugging Face dataset."""
    _require(("datasets",), "hf")
    from quantmedic.medicine.build import BuildSettings, build, read_inputs, write
    from quantmedic.medicine.export import hub_token, push_to_hub as push

    from .benchmarks import load_benchmark

    try:
        settings = BuildSettings(budget=budget, strategy=strategy, seed=seed, chosen=_split_csv(chosen),
                                 step_level=step_level, max_per_problem=max_per_problem,
                                 exclude_categories=tuple(exclude_category or ()),
                                 allow_eval_overlap=allow_eval_overlap, reviews=reviews is not None)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    try:
        token = hub_token() if push_to_hub else None  # fail before any work
    except PermissionError as error:
        raise typer.BadParameter(str(error), param_hint="--push-to-hub") from None
    eval_problems = [p for spec in eval_split for p in load_benchmark(spec)] if eval_split else None
    inputs = read_inputs(verdicts, attempts, reviews, eval_problems)
    pairs, report = build(inputs, settings)
    _print_report(report)
    if not pairs:
        raise InputError(verdicts[0], "no preference pair could be made: " + _why_none(report))
    status = write(out, pairs, report, overwrite=overwrite)
    _stderr.print(f"{'already built, unchanged' if status == 'unchanged' else 'wrote'}: {out} ({len(pairs)} pairs)",
                  highlight=False)
    if push_to_hub:
        url = push(out, push_to_hub, private=private, token=token)  # type: ignore[arg-type]
        _stderr.print(f"pushed to {url}", highlight=False)


@medicine_app.command("continue", epilog="Then: quantmedic medicine build --step-level --attempts OUT ... "
                                         "Exit codes: 0 done, 2 bad input.")
def continue_command(
    model: Annotated[str, typer.Argument(help="The model that continues: the quantized model (its correct "
                                              "continuations are resamples) or the full-precision one.")],
    verdicts: Annotated[list[Path], typer.Option("--verdicts", "-v", help="Verdicts JSONL (repeatable).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Continuations JSONL (graded Attempts).")],
    reviews: Annotated[Optional[Path], typer.Option("--reviews", "-r", help="Reviews JSONL: continue from the "
                                                                            "humans' first wrong step.")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Continuations per failure.")] = 4,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.8,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.95,
    max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    seed: Annotated[int, typer.Option()] = 0,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N failures.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    device: Annotated[Optional[str], typer.Option(help="cuda or cpu (default: cuda when available).")] = None,
) -> None:
    """[bold]Continue[/bold] each diagnosed failure from just before its first wrong step, sample and grade: correct continuations make step-level pairs."""
    _require(("torch", "transformers"), "quantize")
    from quantmedic.medicine.diagnoses import resolve
    from quantmedic.taxonomy.jsonl import read_records, write_records
    from quantmedic.taxonomy.records import Review, Verdict

    from .continuations import continue_failures
    from .grading import grade_attempts

    if out.exists():
        raise InputError(out, "exists; continuations are not appended to or replaced: choose another --out",
                         field="--out")
    diagnoses, _ = resolve([v for p in verdicts for v in read_records(p, Verdict)],
                           read_records(reviews, Review) if reviews else None)
    diagnoses = diagnoses[:limit] if limit else diagnoses
    if not diagnoses:
        raise InputError(verdicts[0], "no usable diagnosis to continue from (unscored, unreviewed or no wrong step)")
    made = continue_failures(model, diagnoses, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                             seed=seed, batch_size=batch_size, device=device)
    graded = grade_attempts(made)
    write_records(out, graded)
    right = {a.sampling.extra["continues"] for a in graded if a.correct}
    _stderr.print(f"wrote {len(graded)} continuations of {len(diagnoses)} failures to {out}: "
                  f"{sum(a.correct is True for a in graded)} correct, covering {len(right)} failures", highlight=False)


def _why_none(report: dict) -> str:
    reasons = {**report["skipped"], **report["pair_notes"]}
    if report["diagnoses"] == 0:
        return "no usable diagnosis (" + (", ".join(f"{k}: {n}" for k, n in reasons.items()) or "no verdicts") + ")"
    return ", ".join(f"{k}: {n}" for k, n in reasons.items()) or "nothing selected"


def _print_report(report: dict) -> None:
    table = Table(title=f"medicine: {report['pairs']} pairs ({report['settings']['strategy']}, "
                        f"budget {report['settings']['budget']})")
    for column in ("category", "diagnosed failures", "drawn", "pairs"):
        table.add_column(column, justify="left" if column == "category" else "right")
    selection = report["selection"]
    for category, available in selection["available"].items():
        table.add_row(category, str(available), str(selection["allocated"].get(category, 0)),
                      str(report["categories"].get(category, 0)))
    _stderr.print(table)
    for key in ("skipped", "pair_notes"):
        if report[key]:
            _stderr.print(f"{'left out' if key == 'skipped' else 'pairs'}: "
                          + ", ".join(f"{k}: {n}" for k, n in report[key].items()), highlight=False)
    _stderr.print(f"chosen from: {', '.join(f'{k} {n}' for k, n in report['chosen_sources'].items()) or '–'}; "
                  f"contamination guard: {report['contamination']['summary']}", highlight=False)


@train_app.command("dpo", epilog="Writes into --out: the adapter (adapter_model.safetensors, adapter_config.json), "
                                 "quantmedic-train.json, training-log.jsonl, loss.png, checkpoints/ and, with --merge, "
                                 "merged/. Exit codes: 0 trained (or already trained), 2 bad input or pairs too long.")
def train_dpo_command(
    model: Annotated[str, typer.Argument(help="Base model: a folder or Hub id, full precision or quantized (GPTQ, "
                                              "AWQ, compressed-tensors, bitsandbytes).")],
    data: Annotated[str, typer.Option("--data", "-d", help="A medicine folder (`quantmedic medicine build`), a "
                                                            "save_to_disk folder or a Hub dataset id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the adapter.")],
    qlora: Annotated[bool, typer.Option("--qlora", help="Load a full-precision base in 4-bit NF4 "
                                                        "(bitsandbytes) and train QLoRA.")] = False,
    max_length: Annotated[int, typer.Option(min=16, help="Longest pair in tokens (prompt + answer); longer pairs "
                                                         "are refused, not truncated.")] = 2048,
    drop_long: Annotated[bool, typer.Option("--drop-long", help="Leave out pairs over --max-length instead of "
                                                                "refusing (reported).")] = False,
    epochs: Annotated[float, typer.Option(min=0.0, help="Passes over the pairs.")] = 1.0,
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (overrides --epochs; -1: off).")] = -1,
    batch_size: Annotated[int, typer.Option(min=1, help="Pairs per device step.")] = 4,
    gradient_accumulation: Annotated[int, typer.Option(min=1)] = 1,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = 5e-5,
    beta: Annotated[float, typer.Option(min=0.0, help="DPO's beta (strength of the pull toward the base).")] = 0.1,
    loss_type: Annotated[str, typer.Option(help="TRL DPO loss: sigmoid, ipo, hinge, ...")] = "sigmoid",
    lora_r: Annotated[int, typer.Option(min=1)] = 16,
    lora_alpha: Annotated[int, typer.Option(min=1)] = 32,
    lora_dropout: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.05,
    target_modules: Annotated[Optional[str], typer.Option(help="Comma-separated modules to adapt (default: "
        "q/k/v/o/gate/up/down_proj found in the model; GPTQModel layers need them named).")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing")] = False,
    save_steps: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps (a rerun resumes).")] = 50,
    seed: Annotated[int, typer.Option()] = 42,
    merge: Annotated[bool, typer.Option("--merge", help="Also save the base with the adapter merged in "
        "(full-precision, QLoRA and compressed-tensors bases; not GPTQ/AWQ).")] = False,
    device: Annotated[Optional[str], typer.Option(help="cuda or cpu (default: cuda when available).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an adapter of other settings or data "
                                                                "in --out.")] = False,
) -> None:
    """[bold]Train[/bold] a LoRA/QLoRA adapter with TRL's DPO trainer on a medicine."""
    _require(("torch", "transformers", "trl", "peft", "datasets"), "quantize,train")
    from .dpo import DPOSettings, PairsTooLong, train_dpo

    try:
        settings = DPOSettings(max_length=max_length, beta=beta, loss_type=loss_type, learning_rate=learning_rate,
                               epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                               gradient_accumulation=gradient_accumulation, lora_r=lora_r, lora_alpha=lora_alpha,
                               lora_dropout=lora_dropout, qlora=qlora, drop_long=drop_long, seed=seed,
                               target_modules=_split_csv(target_modules) if target_modules else None,
                               gradient_checkpointing=gradient_checkpointing, save_steps=save_steps)
        result = train_dpo(model, data, out, settings, merge=merge, device=device, overwrite=overwrite)
    except PairsTooLong as error:
        raise InputError(data, str(error), field="--max-length") from None
    except ValueError as error:
        if isinstance(error, InputError):
            raise
        raise typer.BadParameter(str(error)) from None
    r = result.record
    if result.status == "unchanged":
        _stderr.print(f"already trained with these settings and data: {out}", highlight=False)
        return
    gpu = "" if r["peak_gpu_gib"] is None else f", {r['peak_gpu_gib']:.2f} GiB GPU"
    _stderr.print(f"trained {r['steps']} steps on {r['pairs']} pairs over a {r['base_load']} base in "
                  f"{r['train_seconds']:.1f} s ({r['seconds_per_pair']:.3f} s/pair, peak {r['peak_rss_gib']:.2f} GiB "
                  f"RAM{gpu}); "
                  f"final loss {r['final_loss']:.4f}; wrote {out}" + (f" and {r['merged']}" if r["merged"] else ""),
                  highlight=False)
    if r["pairs_dropped_too_long"]:
        _stderr.print(f"left out {r['pairs_dropped_too_long']} pairs longer than {max_length} tokens", highlight=False)


def evaluate_command(
    full: Annotated[Path, typer.Option("--full", help="Graded attempts of the full-precision model.")],
    before: Annotated[Path, typer.Option("--before", help="Graded attempts of the quantized model.")],
    after: Annotated[Path, typer.Option("--after", help="Graded attempts of the quantized model with the adapter "
                                                        "(`quantmedic generate --adapter`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for recovery.json, recovery.md, recovery.png.")],
    medicine: Annotated[Optional[Path], typer.Option("--medicine", help="The medicine folder: its problems are "
                                                                        "left out of the measurement.")] = None,
    verdicts_before: Annotated[Optional[Path], typer.Option(help="Verdicts on the failures before treatment "
                                                                 "(for the change in the error-category mix).")] = None,
    verdicts_after: Annotated[Optional[Path], typer.Option(help="Verdicts on the failures after treatment.")] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 4000,
) -> None:
    """[bold]Evaluate[/bold] a treatment: accuracy before and after the adapter, and the share of the accuracy lost to quantization that came back, with intervals."""
    from quantmedic.medicine.build import read_report
    from quantmedic.taxonomy.jsonl import read_records, write_atomic
    from quantmedic.taxonomy.records import Verdict

    from .commands_eval import load_graded
    from .recovery import evaluate_recovery, recovery_plot, to_json, to_markdown

    keys = read_report(medicine)["problem_keys"] if medicine else []
    vb = read_records(verdicts_before, Verdict) if verdicts_before else []
    va = read_records(verdicts_after, Verdict) if verdicts_after else []
    result = evaluate_recovery(load_graded(full), load_graded(before), load_graded(after), medicine_keys=keys,
                               verdicts_before=vb, verdicts_after=va, n_resamples=resamples, seed=seed)
    if result.n == 0:
        raise InputError(after, "no problem is present and gradable in all three files"
                         + (" outside the medicine" if result.excluded_medicine else ""))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "recovery.json", [json.dumps(to_json(result), indent=2) + "\n"])
    markdown = to_markdown(result)
    write_atomic(out / "recovery.md", [markdown])
    recovery_plot(result, out / "recovery.png")
    sys.stdout.write(markdown)
    if not medicine:
        _stderr.print("note: without --medicine nothing checks that these problems were not trained on",
                      highlight=False)
    _stderr.print(f"wrote recovery.json, recovery.md, recovery.png to {out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``medicine build``, ``train dpo`` and ``evaluate`` to ``app``."""
    app.add_typer(medicine_app, name="medicine")
    app.add_typer(train_app, name="train")
    app.command("evaluate", epilog="Exit codes: 0 done, 2 bad input.")(evaluate_command)
