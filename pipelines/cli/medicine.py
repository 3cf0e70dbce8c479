"""``quantmedic medicine build`` and ``medicine continue``: the targeted DPO preference dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from quantmedic.medicine.build import BuildSettings, build_into, read_inputs
from quantmedic.medicine.export import hub_token, push_to_hub as push
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.models.continuations import ContinuationSettings, continue_into
from quantmedic.pipelines.models.loading import check_model
from quantmedic.taxonomy.outputs import check_output_file, check_output_folder

from .console import build_settings, described, hub_errors, require, split_csv, stderr

medicine_app = typer.Typer(no_args_is_help=True, help="Build the [bold]medicine[/bold]: a targeted DPO preference "
                                                      "dataset from diagnosed failures.")
B = BuildSettings()
C = ContinuationSettings()


@medicine_app.command("build", epilog="Writes into --out: README.md (dataset card), data/train-*.parquet, hf/ "
                                      "(save_to_disk), pairs.jsonl, medicine.json. Exit codes: 0 built (or already "
                                      "built), 1 bad input data or no pair could be made, 2 bad options.")
def build_command(
    verdicts: Annotated[list[Path], typer.Option("--verdicts", "-v", help="Verdicts JSONL from `quantmedic judge` "
                                                                          "(repeatable).")],
    attempts: Annotated[list[Path], typer.Option("--attempts", "-a", help="Graded attempts to take correct "
        "solutions from: the full-precision model's, resamples of the quantized model (repeatable; any format "
        "`quantmedic judge` reads).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the medicine (replaced as a whole by a new build, so it must not hold any of the inputs).")],
    reviews: Annotated[Optional[Path], typer.Option("--reviews", "-r", help="Reviews JSONL from `quantmedic "
        "annotate pull`: then only human-accepted or corrected verdicts are used, and corrections win.")] = None,
    budget: Annotated[int, described(BuildSettings, "budget")] = B.budget,
    strategy: Annotated[str, described(BuildSettings, "strategy")] = B.strategy,
    seed: Annotated[int, typer.Option(help="Seed of the draw.")] = B.seed,
    chosen: Annotated[str, described(BuildSettings, "chosen")] = ",".join(B.chosen),
    step_level: Annotated[bool, described(BuildSettings, "step_level", "--step-level")] = B.step_level,
    eval_split: Annotated[Optional[list[str]], typer.Option("--eval-split", help="Problems you will evaluate on "
        "(a shipped benchmark, a JSONL file or a Hugging Face dataset; repeatable): they are kept out of the "
        "medicine.")] = None,
    allow_eval_overlap: Annotated[bool, described(BuildSettings, "allow_eval_overlap", "--allow-eval-overlap")]
        = B.allow_eval_overlap,
    max_per_problem: Annotated[int, described(BuildSettings, "max_per_problem")] = B.max_per_problem,
    exclude_category: Annotated[Optional[list[str]], typer.Option("--exclude-category", help="Leave out failures "
        "of this category (repeatable), e.g. degenerate.")] = None,
    allow_chosen_without_thinking: Annotated[bool, described(BuildSettings, "allow_chosen_without_thinking",
                                                             "--allow-chosen-without-thinking")]
        = B.allow_chosen_without_thinking,
    tokenizer: Annotated[Optional[str], described(BuildSettings, "tokenizer")] = None,
    prefer_checker: Annotated[bool, described(BuildSettings, "prefer_checker", "--prefer-checker/--no-prefer-checker")]
        = B.prefer_checker,
    push_to_hub: Annotated[Optional[str], typer.Option("--push-to-hub", help="Also upload to this Hub dataset repo "
                                                                             "(user/name); token from $HF_TOKEN.")] = None,
    private: Annotated[bool, typer.Option("--private", help="Make the Hub repo private.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a different medicine in --out.")] = False,
) -> None:
    """[bold]Build[/bold] DPO preference pairs from diagnosed failures: targeted by error category, with lineage, as a Hugging Face dataset."""
    require(("datasets",), "hf")
    check_output_folder(out, inputs=[*verdicts, *attempts, reviews], what="medicine", whole=True)
    settings = build_settings(BuildSettings, {"exclude_categories": "--exclude-category"}, budget=budget,
                              strategy=strategy, seed=seed, chosen=split_csv(chosen), step_level=step_level,
                              max_per_problem=max_per_problem, exclude_categories=tuple(exclude_category or ()),
                              allow_eval_overlap=allow_eval_overlap, reviews=reviews is not None,
                              allow_chosen_without_thinking=allow_chosen_without_thinking, tokenizer=tokenizer,
                              prefer_checker=prefer_checker)
    try:
        token = hub_token() if push_to_hub else None  # fail before any work
    except PermissionError as error:
        raise typer.BadParameter(str(error), param_hint="--push-to-hub") from None
    eval_problems = [p for spec in eval_split for p in load_benchmark(spec)] if eval_split else None
    pairs, report, status = build_into(read_inputs(verdicts, attempts, reviews, eval_problems), settings, out,
                                       overwrite=overwrite)  # no pair at all: one line (EmptyMedicine) says why
    _print_report(report)
    stderr.print(f"{'already built, unchanged' if status == 'unchanged' else 'wrote'}: {out} ({len(pairs)} pairs)",
                 highlight=False)
    if push_to_hub:
        stderr.print(f"pushed to {push(out, push_to_hub, private=private, token=token)}", highlight=False)


@medicine_app.command("continue", epilog="Then: quantmedic medicine build --step-level --attempts OUT ... "
                                         "Exit codes: 0 done, 1 bad input data, 2 bad options.")
def continue_command(
    model: Annotated[str, typer.Argument(help="The model that continues: the quantized model (its correct "
                                              "continuations are resamples) or the full-precision one.")],
    verdicts: Annotated[list[Path], typer.Option("--verdicts", "-v", help="Verdicts JSONL (repeatable).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Continuations JSONL (graded Attempts): a new file, never appended to, not a --verdicts or --reviews file.")],
    reviews: Annotated[Optional[Path], typer.Option("--reviews", "-r", help="Reviews JSONL: continue from the "
                                                                            "humans' first wrong step.")] = None,
    n: Annotated[int, described(ContinuationSettings, "n", "--n")] = C.n,
    temperature: Annotated[float, described(ContinuationSettings, "temperature")] = C.temperature,
    top_p: Annotated[float, described(ContinuationSettings, "top_p")] = C.top_p,
    max_tokens: Annotated[int, described(ContinuationSettings, "max_tokens")] = C.max_tokens,
    seed: Annotated[int, typer.Option()] = C.seed,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N failures.")] = None,
    batch_size: Annotated[int, described(ContinuationSettings, "batch_size")] = C.batch_size,
    device: Annotated[Optional[str], typer.Option(help="cuda or cpu (default: cuda when available).")] = None,
) -> None:
    """[bold]Continue[/bold] each diagnosed failure from just before its first wrong step, sample and grade: correct continuations make step-level pairs."""
    require(("torch", "transformers"), "quantize")
    check_output_file(out, inputs=[*verdicts, reviews], what="continuations")
    check_model(model)
    settings = build_settings(ContinuationSettings, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                              seed=seed, batch_size=batch_size)
    with hub_errors(model):
        s = continue_into(model, verdicts, out, settings, reviews=reviews, limit=limit, device=device)
    stderr.print(f"wrote {s.continuations} continuations of {s.failures} failures to {out}: {s.correct} correct, "
                 f"covering {s.failures_covered} failures", highlight=False)


def _print_report(report: dict) -> None:
    table = Table(title=f"medicine: {report['pairs']} pairs ({report['settings']['strategy']}, "
                        f"budget {report['settings']['budget']})")
    for column in ("category", "diagnosed failures", "drawn", "pairs"):
        table.add_column(column, justify="left" if column == "category" else "right")
    selection = report["selection"]
    for category, available in selection["available"].items():
        table.add_row(category, str(available), str(selection["allocated"].get(category, 0)),
                      str(report["categories"].get(category, 0)))
    stderr.print(table)
    for key in ("skipped", "pair_notes"):
        if report[key]:
            stderr.print(f"{'left out' if key == 'skipped' else 'pairs'}: "
                          + ", ".join(f"{k}: {n}" for k, n in report[key].items()), highlight=False)
    stderr.print(f"chosen from: {', '.join(f'{k} {n}' for k, n in report['chosen_sources'].items()) or '–'}; "
                  f"contamination guard: {report['contamination']['summary']}", highlight=False)
    if set(report.get("decided_by", {})) - {"judge"}:  # only once another layer decided some: old output unchanged
        stderr.print("diagnoses decided by: " + ", ".join(f"{k} {n}" for k, n in report["decided_by"].items())
                     + ("" if report["settings"].get("prefer_checker") else " (--no-prefer-checker)"), highlight=False)
    _print_lengths(report["lengths"])


def _print_lengths(lengths: dict) -> None:
    """The pairs' lengths: what `train dpo --max-length` must hold."""
    exact = lengths["unit"] == "tokens"
    summary = lengths["tokens" if exact else "estimated_tokens"]
    unit = f"tokens of {lengths['tokenizer']}" if exact else "tokens estimated from characters; --tokenizer counts them"
    over = ", ".join(f"{n} over {m}" for m, n in lengths["pairs_over_max_length"].items())
    stderr.print(f"lengths (prompt + longer answer, {unit}): median {summary['median']}, longest {summary['max']}; "
                 f"pairs {over}", highlight=False)
    if lengths.get("thinking_dropped_by_template"):
        stderr.print(f"warning: the chat template of {lengths['tokenizer']} drops the thinking of "
                     f"{lengths['thinking_dropped_by_template']} trace pairs: `train dpo` trains them in TRL's text format, "
                     "thinking kept (counted so here)",
                     highlight=False)
