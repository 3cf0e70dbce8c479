"""The medicine as a Hugging Face dataset: TRL's conversational preference format, plus lineage columns.

A medicine folder holds::

    README.md                       the dataset card (statistics, licences, how it was made)
    data/train-00000-of-00001.parquet   the pairs (what ``datasets.load_dataset(DIR)`` reads)
    hf/                             the same DatasetDict, ``save_to_disk`` format (``load_from_disk``)
    pairs.jsonl                     the PreferencePair records (schema: taxonomy/schemas)
    medicine.json                   the build report: selection, skips, contamination guard, settings

``prompt``/``chosen``/``rejected`` are lists of ``{role, content}`` messages, which TRL's
``DPOTrainer`` takes as they are; the other columns are lineage and are ignored by TRL.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantmedic.taxonomy.jsonl import write_atomic, write_records
from quantmedic.taxonomy.records import PreferencePair

PARQUET = "data/train-00000-of-00001.parquet"
PAIRS = "pairs.jsonl"
REPORT = "medicine.json"  # the build's report: settings, counts, lineage, problem keys
LICENCES = {
    "gsm8k": ("MIT", "openai/grade-school-math"),
    "math500": ("MIT", "openai/prm800k (MATH-500 split of Hendrycks et al.'s MATH)"),
    "aime24": ("MIT (problems © MAA)", "QwenLM/Qwen2.5-Math evaluation data"),
    "processbench": ("Apache-2.0", "QwenLM/ProcessBench"),
}


def features():
    """The dataset's column types (explicit, so that empty or all-null columns keep their type)."""
    from datasets import Features, List, Value

    message = List({"role": Value("string"), "content": Value("string")})
    text, number = Value("string"), Value("int64")
    return Features({
        "prompt": message, "chosen": message, "rejected": message, "id": text, "kind": text,
        "shared_prefix_steps": number, "problem_id": text, "problem_source": text, "problem_source_id": text,
        "category": text, "subtype": text, "first_wrong_step": number, "diagnosis_source": text,
        "verdict_id": text, "judge_model": text, "review_ids": List(text), "rejected_attempt_id": text,
        "rejected_model": text, "rejected_quantization": text, "chosen_source": text, "chosen_attempt_id": text,
        "chosen_model": text, "first_wrong_section": number, "rejected_thinking_chars": number,
        "chosen_thinking_chars": number, "rejected_thinking_tokens": number, "chosen_thinking_tokens": number,
        "thinking_tokens_estimated": Value("bool"),
    })


def to_dataset_dict(pairs: Sequence[PreferencePair]):
    """A ``DatasetDict`` with one ``train`` split holding ``pairs``."""
    from datasets import Dataset, DatasetDict

    rows = [p.model_dump(mode="json") for p in pairs]
    columns = features()
    return DatasetDict({"train": Dataset.from_dict({k: [r[k] for r in rows] for k in columns}, features=columns)})


def licence_of(source: str | None) -> tuple[str, str]:
    """(licence, origin) of a problem source; unknown sources say so."""
    return LICENCES.get(source or "", ("unknown: check the licence of the problems' source", source or "unknown"))


def _table(counter: Counter, total: int, header: str) -> list[str]:
    lines = [f"| {header} | pairs | share |", "|---|---:|---:|"]
    for key, n in counter.most_common():
        lines.append(f"| {key} | {n} | {n / total:.1%} |" if total else f"| {key} | {n} | – |")
    return lines


def _card_licence(sources: Counter) -> str:
    licences = {licence_of(s)[0] for s in sources}
    if len(licences) == 1 and (only := next(iter(licences))) in ("MIT", "Apache-2.0"):
        return only.lower()
    if licences <= {"MIT", "MIT (problems © MAA)", "Apache-2.0"}:
        return "other"
    return "unknown"


def dataset_card(pairs: Sequence[PreferencePair], report: dict[str, Any]) -> str:
    """The README.md of the medicine: YAML metadata the Hub reads, then the statistics and provenance."""
    total = len(pairs)
    sources = Counter(p.problem_source or "unknown" for p in pairs)
    selection = report.get("selection", {})
    guard = report.get("contamination", {})
    settings = report.get("settings", {})
    front = ["---", f"license: {_card_licence(sources)}", "task_categories:", "- text-generation", "tags:", "- dpo",
             "- preference", "- math", "- quantization", "- quantmedic", "size_categories:", "- n<1K" if total < 1000
             else "- 1K<n<10K", "---", ""]
    # No `configs:` block: `data/train-*` is found by its name, and with a `configs:` block datasets 5.2
    # keys its cache on the block alone, so a folder rebuilt in place would load the old pairs.
    body = [
        "# A quantmedic medicine: targeted DPO preference pairs", "",
        f"{total} preference pairs that treat the math-reasoning failures of a quantized model. Each pair's "
        "`rejected` side is a failed solution of the quantized model whose first wrong step and error category "
        "were diagnosed by an LLM judge" + (" and verified by human annotators" if settings.get("reviews") else "")
        + "; its `chosen` side is a correct solution to the same problem. Made with "
        f"[quantmedic](https://pypi.org/project/quantmedic/) {report.get('quantmedic_version', '')}.", "",
        "## Use", "", "```python", "from datasets import load_dataset", "from trl import DPOConfig, DPOTrainer", "",
        'data = load_dataset("REPO_OR_FOLDER", split="train")   # prompt / chosen / rejected are chat messages',
        "trainer = DPOTrainer(model, args=DPOConfig(...), train_dataset=data, processing_class=tokenizer, peft_config=...)",
        "```", "", "Or `quantmedic train dpo MODEL --data FOLDER --out ADAPTER`.", "",
        "## Make-up", "", f"- pairs: **{total}** (budget {settings.get('budget')}, strategy "
        f"`{settings.get('strategy')}`, seed {settings.get('seed')})",
        f"- rejected solutions by: {', '.join(f'{k} ({n})' for k, n in Counter(f'{p.rejected_model}' + (f' [{p.rejected_quantization}]' if p.rejected_quantization else '') for p in pairs).most_common()) or '–'}",
        f"- judges: {', '.join(sorted({p.judge_model for p in pairs})) or '–'}", "",
        "### Error categories", "", *_table(Counter(p.category for p in pairs), total, "category"), "",
        "### Sources of the chosen solutions", "", *_table(Counter(p.chosen_source for p in pairs), total, "chosen from"),
        "", "### Diagnoses", "", *_table(Counter(p.diagnosis_source for p in pairs), total, "diagnosed by"), "",
        *_layers_section(report, total),
        "### Pair kinds", "", *_table(Counter(p.kind for p in pairs), total, "kind"), "",
        *_lengths_section(report.get("lengths")),
        "## Problems and licences", "", "| source | pairs | licence | origin |", "|---|---:|---|---|",
        *[f"| {s} | {n} | {licence_of(s)[0]} | {licence_of(s)[1]} |" for s, n in sources.most_common()], "",
        "The pairs' solutions were written by the models named above; their use may also be governed by those "
        "models' licences.", "",
        "## How it was made", "",
        "1. Failed attempts of the quantized model were diagnosed by the judge(s): the first wrong step and an error "
        "category of the taxonomy " + f"`{report.get('taxonomy', '')}`.",
        "2. " + ("Only verdicts that human annotators accepted or corrected were kept; corrections replace the "
                 "judge's answer." if settings.get("reviews") else "Only scored verdicts were kept (no human review)."),
        "3. Failures were drawn per error category: "
        + ", ".join(f"{k} {selection.get('allocated', {}).get(k, 0)} of {n}" for k, n in selection.get("available", {}).items())
        + f" (at most {settings.get('max_per_problem')} per problem).",
        f"4. Chosen solutions in the order {', '.join(settings.get('chosen', []))}"
        + ("; step-level pairs share the solution up to the first wrong step." if settings.get("step_level") else "."),
        f"5. Contamination guard: {guard.get('summary', 'not run')}.", "",
        "Left out along the way: " + (", ".join(f"{k}: {n}" for k, n in report.get("skipped", {}).items()) or "nothing") + ".",
        "", "## Columns", "",
        "`prompt`, `chosen`, `rejected` (TRL's conversational preference format); lineage: `problem_id`, "
        "`problem_source(_id)`, `category`, `subtype`, `first_wrong_step`, `kind`, `shared_prefix_steps`, "
        "`diagnosis_source`, `verdict_id`, `judge_model`, `review_ids`, `rejected_attempt_id`, `rejected_model`, "
        "`rejected_quantization`, `chosen_source`, `chosen_attempt_id`, `chosen_model`; trace pairs (a reasoning "
        "model's `<think>` traces, prompted with the reasoning prompt): `first_wrong_section`, "
        "`rejected_thinking_chars`, `chosen_thinking_chars`, `rejected_thinking_tokens`, `chosen_thinking_tokens`, "
        "`thinking_tokens_estimated`.", ""]
    return "\n".join(front + body)


LAYER_NAMES = {"judge": "LLM judge", "checker": "step checker", "rules": "degenerate-output rules",
               "human": "human correction"}


def _layers_section(report: dict[str, Any], total: int) -> list[str]:
    """The card's deciding layers: which layer decided the pairs' diagnoses (``medicine.json`` lists the
    checker-decided pairs' ids)."""
    layers = report.get("decided_by")
    if not layers:
        return []
    counter = Counter({LAYER_NAMES.get(k, k): n for k, n in layers.items()})
    note = ("Checker-decided diagnoses were taken first where the budget had to choose (`prefer_checker`); "
            if report.get("settings", {}).get("prefer_checker") and layers.get("checker") else "")
    return ["### Deciding layer", "", *_table(counter, total, "decided by"), "",
            note + "verdicts whose LLM judge conflicts with the step checker are used only when a human reviewed "
            "them; `medicine.json` lists the checker-decided pairs (`checker_decided_pairs`).", ""]


def _lengths_section(lengths: dict[str, Any] | None) -> list[str]:
    """The card's lengths: what ``train dpo --max-length`` must hold."""
    if not lengths:
        return []
    exact = lengths.get("unit") == "tokens"
    summary = lengths.get("tokens" if exact else "estimated_tokens", {})
    unit = f"tokens ({lengths.get('tokenizer')})" if exact else "tokens, estimated from the characters"
    over = ", ".join(f"{n} over {m}" for m, n in lengths.get("pairs_over_max_length", {}).items())
    return ["### Lengths", "", f"Prompt + longer answer, in {unit}: median {summary.get('median')}, 90th percentile "
            f"{summary.get('p90')}, longest {summary.get('max')}. Pairs over a `--max-length` of: {over}.", ""]


def save(out_dir: str | Path, pairs: Sequence[PreferencePair], report: dict[str, Any]) -> Path:
    """Write the medicine folder's files into ``out_dir`` (which the caller makes fresh)."""
    out_dir = Path(out_dir)
    dataset = to_dataset_dict(pairs)
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    dataset["train"].to_parquet(str(out_dir / PARQUET))
    dataset.save_to_disk(str(out_dir / "hf"))
    write_records(out_dir / PAIRS, pairs)
    write_atomic(out_dir / REPORT, [json.dumps(report, indent=2, sort_keys=True) + "\n"])
    write_atomic(out_dir / "README.md", [dataset_card(pairs, report)])
    return out_dir


def hub_token(env: str = "HF_TOKEN") -> str:
    """The Hub token from ``$env`` (or the one ``hf auth login`` saved); a clear error without one."""
    token = os.environ.get(env)
    if not token:
        from huggingface_hub import get_token

        token = get_token()
    if not token:
        raise PermissionError(f"pushing to the Hub needs a token: set {env} (a write token from "
                              "https://huggingface.co/settings/tokens) or run `hf auth login`")
    return token


def push_to_hub(out_dir: str | Path, repo: str, *, private: bool = False, token: str) -> str:
    """Upload the medicine's dataset and its card to the Hub dataset repo ``repo``; returns its URL."""
    from datasets import load_from_disk
    from huggingface_hub import HfApi

    out_dir = Path(out_dir)
    load_from_disk(str(out_dir / "hf")).push_to_hub(repo, private=private, token=token)
    HfApi(token=token).upload_file(path_or_fileobj=str(out_dir / "README.md"), path_in_repo="README.md",
                                   repo_id=repo, repo_type="dataset", commit_message="quantmedic dataset card")
    return f"https://huggingface.co/datasets/{repo}"
