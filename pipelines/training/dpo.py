"""``quantmedic train dpo``: LoRA/QLoRA adapters trained with TRL's ``DPOTrainer`` on a medicine.

How the base model is loaded depends on what it is:

* full precision: as is (LoRA), or in bitsandbytes 4-bit NF4 with ``qlora`` (QLoRA);
* GPTQ / AWQ (GPTQModel layers): as is, with LoRA on the listed projection modules (PEFT's
  ``"all-linear"`` matches none of GPTQModel's layers, so the targets are found by name);
* compressed-tensors (llm-compressor): dequantized on load (its packed layers take no adapters);
* bitsandbytes checkpoints: as is, prepared for k-bit training.

Pairs longer than ``max_length`` are refused with the numbers, never truncated (TRL would cut
them silently); reasoning traces are long, so the numbers count the trace pairs among them. When the
model's chat template drops the thinking of trace pairs (DeepSeek-R1's strips ``<think>`` from
assistant turns), the pairs are trained in TRL's text format instead, thinking whole
(:mod:`.trace_format`); the record says which format was used. The adapter folder
gets the adapter, ``quantmedic-train.json`` (settings, base, data, versions, time and peak memory), ``training-log.jsonl``, ``loss.png`` and, with ``merge``, a
merged full model under ``merged/``. Trainer checkpoints go to ``checkpoints/``; a rerun with the
same settings resumes from the last one, and a finished adapter is not trained again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import write_atomic

from quantmedic.pipelines.models.loading import TRAIN_RECORD, base_kind, has_accelerator, load_base, quantization_of

from quantmedic.medicine.lengths import thinking_probe

from .dpo_config import DPOSettings, PairsTooLong, ThinkingDropped
from .trace_format import training_set


PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VERSIONED = ("quantmedic", "torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets",
             "gptqmodel", "compressed-tensors")


# --- the base model ---

def find_target_modules(model: Any, wanted: tuple[str, ...] | None = None) -> list[str]:
    """The projection modules LoRA goes on: ``wanted`` if given (each must exist), else the usual seven found."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if name and not list(module.children()) and "lm_head" not in name}
    if wanted:
        missing = [w for w in wanted if w not in names]
        if missing:
            raise ValueError(f"--target-modules {', '.join(missing)}: no such module in the model "
                             f"(it has {', '.join(sorted(n for n in names if not n.isdigit()))})")
        return list(wanted)
    found = [p for p in PROJECTIONS if p in names]
    if not found:
        raise ValueError("found none of the usual projection modules (q_proj, ..., down_proj); name the modules to "
                         "adapt with --target-modules")
    return found


# --- the data ---

def load_pairs(data: str | Path) -> Any:
    """The ``train`` split of a medicine folder, a ``save_to_disk`` folder, or a Hub dataset id."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    path = Path(data)
    if (path / "hf" / "dataset_dict.json").is_file():
        dataset = load_from_disk(str(path / "hf"))
    elif (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
        dataset = load_from_disk(str(path))
    else:
        dataset = load_dataset(str(data))
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise InputError(data, f"has no train split (it has {', '.join(dataset)})")
        dataset = dataset["train"]
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in dataset.column_names]
    if missing:
        raise InputError(data, "is not a preference dataset (TRL's prompt/chosen/rejected columns)", field=missing[0])
    if len(dataset) == 0:
        raise InputError(data, "holds no pairs")
    return dataset


def over_length(dataset: Any, max_length: int) -> list[tuple[int, int]]:
    """(row, tokens) of each tokenized pair whose prompt + longer answer exceeds ``max_length``."""
    rows = []
    for i, (p, c, r) in enumerate(zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])):
        n = len(p) + max(len(c), len(r))
        if n > max_length:
            rows.append((i, n))
    return rows


def too_long_message(long: list[tuple[int, int]], total: int, max_length: int, traces: int = 0) -> str:
    longest = max(n for _, n in long)
    of_them = f", {traces} of them reasoning traces" if traces else ""
    return (f"{len(long)} of {total} pairs are longer than max_length={max_length} tokens (the longest has {longest}"
            f"{of_them}; rows {', '.join(str(i) for i, _ in long[:10])}{', ...' if len(long) > 10 else ''}). TRL would "
            f"truncate them and train on cut-off solutions: raise --max-length to at least {longest}, or leave them out "
            "with --drop-long")


def thinking_dropped(dataset: Any, tokenized: Any, tokenizer: Any) -> list[int]:
    """Rows whose answer has thinking that the tokenized answer (in either format) lacks."""
    rows = []
    for i, sides in enumerate(zip(dataset["chosen"], dataset["rejected"], tokenized["chosen_ids"],
                                  tokenized["rejected_ids"])):
        for answer, ids in (sides[0::2], sides[1::2]):
            probe = thinking_probe(answer[-1]["content"] if isinstance(answer, list) else answer)
            if probe and probe not in tokenizer.decode(ids):
                rows.append(i)
                break
    return rows


# --- the run ---

def package_versions(names=VERSIONED) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def _data_fingerprint(dataset: Any) -> str:
    digest = hashlib.sha256()
    for row in dataset.select_columns(["prompt", "chosen", "rejected"]):
        digest.update(json.dumps(row, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def peak_memory() -> dict[str, float | None]:
    """Peak resident memory of this process and peak GPU memory allocated, in GiB."""
    import torch

    scale = 1 if sys.platform == "darwin" else 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30
    gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"peak_rss_gib": round(rss, 3), "peak_gpu_gib": None if gpu is None else round(gpu, 3)}


def loss_plot(log_history: list[dict], path: str | Path) -> Path | None:
    """DPO loss per step (and reward accuracy where logged)."""
    from quantmedic.judge.figures import plt, save_figure  # matplotlib: loaded only when plotting

    points = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(*zip(*points), marker="o", markersize=2.5, label="DPO loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    accuracy = [(h["step"], h["rewards/accuracies"]) for h in log_history if "rewards/accuracies" in h]
    if accuracy:
        twin = ax.twinx()
        twin.plot(*zip(*accuracy), color="tab:green", alpha=0.6, label="reward accuracy")
        twin.set_ylim(-0.02, 1.02)
        twin.set_ylabel("reward accuracy")
    ax.set_title("DPO training")
    return save_figure(fig, path)


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    status: str  # "trained" or "unchanged"
    record: dict


def _config_key(model: str, settings: DPOSettings, data_fingerprint: str) -> str:
    payload = {"model": str(model), "settings": settings.model_dump(mode="json"), "data": data_fingerprint}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:16]


def train_dpo(model: str | Path, data: str | Path, out_dir: str | Path, settings: DPOSettings = DPOSettings(), *,
              merge: bool = False, device: str | None = None, overwrite: bool = False) -> TrainResult:
    """Train a LoRA adapter with DPO on the pairs in ``data``; see the module docstring for the files."""
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    dataset = load_pairs(data)
    fingerprint = _data_fingerprint(dataset)
    key = _config_key(str(model), settings, fingerprint)
    record_path = out_dir / TRAIN_RECORD
    if record_path.is_file():
        previous = json.loads(record_path.read_text(encoding="utf-8"))
        if previous.get("config_key") == key:
            if merge and not previous.get("merged"):
                previous["merged"] = str(merge_adapter(model, out_dir, previous["base_load"], device=device))
                write_atomic(record_path, [json.dumps(previous, indent=2) + "\n"])
            return TrainResult(out_dir, "unchanged", previous)
        if not overwrite:
            raise InputError(out_dir, "holds an adapter trained with other settings or data; choose another --out "
                                      "or pass --overwrite", field="--out")
    checkpoints = out_dir / "checkpoints"
    marker = out_dir / ".config_key"  # which settings the checkpoints belong to
    stale = marker.is_file() and marker.read_text() != key and any(checkpoints.glob("checkpoint-*"))
    if stale and not overwrite:
        raise InputError(out_dir, "holds checkpoints of a run with other settings or data; choose another --out "
                                  "or pass --overwrite", field="--out")

    quantization = quantization_of(model)
    kind = base_kind(quantization, settings.qlora)
    device = device or ("cuda" if has_accelerator() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    started = time.monotonic()
    pairs, data_format = training_set(dataset, tokenizer)
    trainer, targets = _trainer(model, kind, pairs, tokenizer, settings, checkpoints, device)
    dropped = _drop_or_refuse_long(trainer, settings, dataset, tokenizer)
    if stale:
        shutil.rmtree(checkpoints, ignore_errors=True)
    if record_path.is_file():  # replacing another adapter (--overwrite): its record and merged model go first
        record_path.unlink()
        shutil.rmtree(out_dir / "merged", ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(key)
    run = _train(trainer, checkpoints, out_dir, tokenizer, settings, started)
    record = {
        "config_key": key, "base_model": str(model), "base_quantization": quantization.model_dump(mode="json")
        if quantization else None, "base_load": kind, "target_modules": targets,
        "settings": settings.model_dump(mode="json"), "data": str(data), "data_fingerprint": fingerprint,
        "format": data_format, "pairs": len(trainer.train_dataset), "pairs_dropped_too_long": dropped, **run, "device": device,
        **peak_memory(), "versions": package_versions(), "merged": None,
    }
    if merge:
        record["merged"] = str(merge_adapter(model, out_dir, kind, device=device))
    write_atomic(record_path, [json.dumps(record, indent=2) + "\n"])
    return TrainResult(out_dir, "trained", record)


def _trainer(model: str | Path, kind: str, dataset: Any, tokenizer: Any, settings: DPOSettings, checkpoints: Path,
             device: str) -> tuple[Any, list[str]]:
    """TRL's DPOTrainer over the base loaded as ``kind``, with a LoRA config on the target modules."""
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    base = load_base(model, kind, device=device)
    targets = find_target_modules(base, settings.target_modules)
    args = DPOConfig(
        output_dir=str(checkpoints), beta=settings.beta, loss_type=[settings.loss_type],
        learning_rate=settings.learning_rate, num_train_epochs=settings.epochs,
        max_steps=settings.max_steps if settings.max_steps > 0 else -1,
        per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=settings.gradient_accumulation,
        max_length=None, logging_steps=1, save_strategy="steps", save_steps=settings.save_steps, save_total_limit=2,
        report_to=[], seed=settings.seed, use_cpu=device == "cpu", gradient_checkpointing=settings.gradient_checkpointing,
        bf16=device == "cuda" and kind != "nf4" and _bf16_ok(), disable_tqdm=False)
    lora = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", bias="none")
    trainer = DPOTrainer(model=base, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora)
    return trainer, targets


def _drop_or_refuse_long(trainer: Any, settings: DPOSettings, dataset: Any, tokenizer: Any) -> int:
    """Refuse pairs over ``max_length`` (or, with ``drop_long``, leave them out), and trace pairs whose thinking
    is still missing from the tokenized pairs; returns how many were dropped for their length."""
    lost = thinking_dropped(dataset, trainer.train_dataset, tokenizer)
    if lost:
        raise ThinkingDropped(f"the thinking of {len(lost)} of {len(dataset)} pairs is missing from the tokenized "
                              f"pairs (rows {', '.join(map(str, lost[:10]))}{', ...' if len(lost) > 10 else ''}), even "
                              "in TRL's text format: DPO would train on their solutions alone")
    long = over_length(trainer.train_dataset, settings.max_length)
    if not long:
        return 0
    total = len(trainer.train_dataset)
    keep = sorted(set(range(total)) - {i for i, _ in long})
    if not settings.drop_long or not keep:
        kinds = dataset["kind"] if "kind" in dataset.column_names else [None] * total
        traces = sum(1 for i, _ in long if kinds[i] == "trace")
        raise PairsTooLong(too_long_message(long, total, settings.max_length, traces))
    trainer.train_dataset = trainer.train_dataset.select(keep)
    return len(long)


def _train(trainer: Any, checkpoints: Path, out_dir: Path, tokenizer: Any, settings: DPOSettings,
           started: float) -> dict:
    """Train (resuming from the last checkpoint), save the adapter, its log and loss plot; the run's figures."""
    resume = checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    start_step = _last_checkpoint_step(checkpoints) if resume else 0
    output = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.monotonic() - started
    train_seconds = float(output.metrics.get("train_runtime", seconds))
    pairs_seen = (trainer.state.global_step - start_step) * settings.batch_size * settings.gradient_accumulation
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    history = trainer.state.log_history
    write_atomic(out_dir / "training-log.jsonl", [json.dumps(h) + "\n" for h in history])
    loss_plot(history, out_dir / "loss.png")
    return {"steps": trainer.state.global_step, "resumed": resume, "resumed_from_step": start_step,
            "seconds": round(seconds, 3), "train_seconds": round(train_seconds, 3), "pairs_seen": pairs_seen,
            "seconds_per_pair": round(train_seconds / max(pairs_seen, 1), 4),
            "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None)}


def _last_checkpoint_step(checkpoints: Path) -> int:
    """The step of the newest ``checkpoint-N`` folder (what a resumed run starts from)."""
    steps = [int(p.name.split("-")[-1]) for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(steps, default=0)


def _bf16_ok() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def merge_adapter(model: str | Path, adapter_dir: str | Path, kind: str, *, device: str | None = None) -> Path:
    """Merge the adapter into a full-precision copy of the base, saved under ``adapter_dir/merged``.

    A QLoRA adapter merges into the unquantized base; GPTQ/AWQ integer weights cannot take a merge.
    """
    if kind in ("gptqmodel", "bitsandbytes"):
        raise ValueError("an adapter over GPTQ/AWQ/bitsandbytes weights cannot be merged into them: load it with "
                         "`--adapter`, or merge it into the full-precision model and quantize that again")
    from peft import PeftModel
    from transformers import AutoTokenizer

    load_kind = "full" if kind == "nf4" else kind
    base = load_base(model, load_kind, device=device, for_training=False)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    if load_kind == "compressed-tensors-dequantized":
        merged.config.quantization_config = None
        if hasattr(merged, "hf_quantizer"):
            merged.hf_quantizer = None
    out = Path(adapter_dir) / "merged"
    merged.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out))
    return out


