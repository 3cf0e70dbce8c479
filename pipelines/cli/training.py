"""``quantmedic train dpo``: a LoRA/QLoRA adapter trained with TRL's DPO trainer on a medicine.

Every training option's default and help come from :class:`~quantmedic.pipelines.training.dpo_config.DPOSettings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from quantmedic.pipelines.models.loading import check_model, could_be_hub_id
from quantmedic.pipelines.training.dpo import TrainResult, train_dpo
from quantmedic.pipelines.training.dpo_config import DPOSettings, PairsTooLong, ThinkingDropped
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.outputs import check_output_folder

from .console import build_settings, described, hub_errors, require, split_csv, stderr, usage_errors

D = DPOSettings()
train_app = typer.Typer(no_args_is_help=True, help="[bold]Train[/bold] adapters on a medicine.")


@train_app.command("dpo", epilog="Writes into --out: the adapter (adapter_model.safetensors, adapter_config.json), "
                                 "quantmedic-train.json, training-log.jsonl, loss.png, checkpoints/ and, with --merge, "
                                 "merged/. Trace pairs whose thinking the model's chat template drops (DeepSeek-R1's) are "
                                 "trained in TRL's text format, thinking whole. Exit codes: 0 trained (or already "
                                 "trained), 1 bad input data, 2 bad options or pairs longer than "
                                 "--max-length.")
def train_dpo_command(
    model: Annotated[str, typer.Argument(help="Base model: a folder or Hub id, full precision or quantized (GPTQ, "
                                              "AWQ, compressed-tensors, bitsandbytes).")],
    data: Annotated[str, typer.Option("--data", "-d", help="A medicine folder (`quantmedic medicine build`), a "
                                                            "save_to_disk folder or a Hub dataset id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the adapter (not the --data folder; checked before anything is loaded).")],
    qlora: Annotated[bool, described(DPOSettings, "qlora", "--qlora")] = D.qlora,
    max_length: Annotated[int, described(DPOSettings, "max_length")] = D.max_length,
    drop_long: Annotated[bool, described(DPOSettings, "drop_long", "--drop-long")] = D.drop_long,
    epochs: Annotated[float, described(DPOSettings, "epochs")] = D.epochs,
    max_steps: Annotated[int, described(DPOSettings, "max_steps")] = D.max_steps,
    batch_size: Annotated[int, described(DPOSettings, "batch_size")] = D.batch_size,
    gradient_accumulation: Annotated[int, described(DPOSettings, "gradient_accumulation")] = D.gradient_accumulation,
    learning_rate: Annotated[float, described(DPOSettings, "learning_rate")] = D.learning_rate,
    beta: Annotated[float, described(DPOSettings, "beta")] = D.beta,
    loss_type: Annotated[str, described(DPOSettings, "loss_type")] = D.loss_type,
    lora_r: Annotated[int, described(DPOSettings, "lora_r")] = D.lora_r,
    lora_alpha: Annotated[int, described(DPOSettings, "lora_alpha")] = D.lora_alpha,
    lora_dropout: Annotated[float, described(DPOSettings, "lora_dropout")] = D.lora_dropout,
    target_modules: Annotated[Optional[str], described(DPOSettings, "target_modules")] = None,
    gradient_checkpointing: Annotated[bool, described(DPOSettings, "gradient_checkpointing", "--gradient-checkpointing")]
        = D.gradient_checkpointing,
    save_steps: Annotated[int, described(DPOSettings, "save_steps")] = D.save_steps,
    seed: Annotated[int, typer.Option()] = D.seed,
    merge: Annotated[bool, typer.Option("--merge", help="Also save the base with the adapter merged in "
        "(full-precision, QLoRA and compressed-tensors bases; not GPTQ/AWQ).")] = False,
    device: Annotated[Optional[str], typer.Option(help="cuda or cpu (default: cuda when available).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an adapter of other settings or data "
                                                                "in --out.")] = False,
) -> None:
    """[bold]Train[/bold] a LoRA/QLoRA adapter with TRL's DPO trainer on a medicine."""
    require(("torch", "transformers", "trl", "peft", "datasets"), "quantize,train")
    settings = build_settings(DPOSettings, max_length=max_length, beta=beta, loss_type=loss_type,
                              learning_rate=learning_rate, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                              gradient_accumulation=gradient_accumulation, lora_r=lora_r, lora_alpha=lora_alpha,
                              lora_dropout=lora_dropout, qlora=qlora, drop_long=drop_long, seed=seed,
                              target_modules=split_csv(target_modules) if target_modules else None,
                              gradient_checkpointing=gradient_checkpointing, save_steps=save_steps)
    check_output_folder(out, inputs=[data, model], what="adapter")  # the paths before anything is loaded
    check_model(model)
    check_pairs_source(data)
    with usage_errors():
        try:
            with hub_errors(model):
                result = train_dpo(model, data, out, settings, merge=merge, device=device, overwrite=overwrite)
        except PairsTooLong as error:
            raise InputError(data, str(error), field="--max-length") from None
        except ThinkingDropped as error:
            raise InputError(data, str(error)) from None
    _print_result(result, out, max_length)


def check_pairs_source(data: str) -> None:
    """--data must be a folder holding a dataset (a medicine, a save_to_disk folder, Parquet files) or a Hub id."""
    path = Path(data)
    if not path.exists() and could_be_hub_id(data):
        return
    if not path.is_dir():
        raise InputError(data, "is not a folder; --data takes a medicine folder, a save_to_disk folder or a Hub "
                               "dataset id", field="--data")
    markers = ("hf/dataset_dict.json", "dataset_dict.json", "dataset_info.json", "*.parquet", "data/*.parquet")
    if not any(any(path.glob(marker)) for marker in markers):
        raise InputError(data, "holds no dataset (no hf/, dataset_dict.json or Parquet files): build a medicine with "
                               "`quantmedic medicine build`", field="--data")


def _print_result(result: TrainResult, out: Path, max_length: int) -> None:
    r = result.record
    if result.status == "unchanged":
        stderr.print(f"already trained with these settings and data: {out}", highlight=False)
        return
    gpu = "" if r["peak_gpu_gib"] is None else f", {r['peak_gpu_gib']:.2f} GiB GPU"
    stderr.print(f"trained {r['steps']} steps on {r['pairs']} pairs over a {r['base_load']} base in "
                  f"{r['train_seconds']:.1f} s ({r['seconds_per_pair']:.3f} s/pair, peak {r['peak_rss_gib']:.2f} GiB "
                  f"RAM{gpu}); "
                  f"final loss {r['final_loss']:.4f}; wrote {out}" + (f" and {r['merged']}" if r["merged"] else ""),
                  highlight=False)
    if r.get("format", "conversational") != "conversational":
        stderr.print(f"pairs trained in TRL's {r['format']}: the prompt through the template with its generation "
                     "prompt, each answer with its thinking whole", highlight=False)
    if r["pairs_dropped_too_long"]:
        stderr.print(f"left out {r['pairs_dropped_too_long']} pairs longer than {max_length} tokens", highlight=False)
