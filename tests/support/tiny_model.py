"""A tiny Qwen2-shaped chat model for tests, built locally in seconds (no Hub, no downloads).

A byte-level BPE tokenizer (vocab 2048) is trained with ``tokenizers`` on the shipped GSM8K test
set; the model (hidden 256, 2 layers, ~2.2M parameters) is trained for 60 full-batch steps on eight
short solutions rewritten in quantmedic's step format ("Step 1: ...", blank line, ...,
``\\boxed{N}``) behind a ChatML prompt, so that its greedy output mostly has steps and digits. The result is an HF
directory (``save_pretrained``) cached under the caller's folder; a fingerprint of this file's
recipe decides whether a cached copy is still current.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VOCAB_SIZE = 2048
TRAIN_STEPS = 60
TRAIN_EXAMPLES = 8
SEED = 0
MARKER = "tiny-model.fingerprint"
_CALC = re.compile(r"<<[^>]*>>")


def _gsm8k_path() -> Path:
    from quantmedic.pipelines.data import shipped_path

    return shipped_path("gsm8k")


def gsm8k_rows(limit: int | None = None) -> list[dict]:
    """The shipped GSM8K test problems (question, answer)."""
    rows = [json.loads(line) for line in _gsm8k_path().read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def step_format(answer: str) -> str:
    """A GSM8K answer rewritten as 'Step i: ...' paragraphs ending in a boxed answer."""
    *lines, final = _CALC.sub("", answer).strip().splitlines()
    steps = [f"Step {i}: {line.strip()}" for i, line in enumerate(lines, 1) if line.strip()]
    final = final.replace("####", "").strip()
    return "\n\n".join(steps + [f"The answer is $\\boxed{{{final}}}$."])


def _fingerprint() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None, chat_template=CHATML,
                                   model_max_length=2048, padding_side="left")


def _build_model(tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, dtype="float32",
    )
    return Qwen2ForCausalLM(config)


def _train(model, tokenizer, rows: list[dict], steps: int, lr: float = 5e-3) -> None:
    """Full-batch AdamW on a few short chat-formatted solutions: enough to learn the format."""
    import torch

    texts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": step_format(row["answer"])}],
        tokenize=False) for row in rows]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
    labels = torch.full((len(ids), width), -100)
    for i, seq in enumerate(ids):
        input_ids[i, : len(seq)] = labels[i, : len(seq)] = torch.tensor(seq)
    mask = (labels != -100).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def build_tiny_model(out_dir: Path, *, steps: int = TRAIN_STEPS) -> Path:
    """Build the tiny model into ``out_dir`` (replaced if present) and return it."""
    import torch

    torch.manual_seed(SEED)
    rows = gsm8k_rows()
    tokenizer = _train_tokenizer([r["question"] + "\n" + step_format(r["answer"]) for r in rows])
    model = _build_model(tokenizer)
    shortest = sorted(rows[:200], key=lambda r: len(r["question"]) + len(r["answer"]))[:TRAIN_EXAMPLES]
    _train(model, tokenizer, shortest, steps)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / MARKER).write_text(_fingerprint())
    stale = out_dir.with_name(f"{out_dir.name}.stale-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(stale)
    try:
        tmp.rename(out_dir)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(stale, ignore_errors=True)
    return out_dir


def default_cache_dir() -> Path:
    """$QUANTMEDIC_TEST_CACHE, else the repository's ignored ``.cache/test-models``."""
    return Path(os.environ.get("QUANTMEDIC_TEST_CACHE") or Path(__file__).resolve().parents[2] / ".cache" / "test-models")


def tiny_model(cache_dir: Path | None = None) -> Path:
    """The tiny model's HF directory under ``cache_dir``, built only if missing or stale."""
    out_dir = Path(cache_dir or default_cache_dir()) / "tiny-qwen2"
    marker = out_dir / MARKER
    if marker.is_file() and marker.read_text() == _fingerprint():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return build_tiny_model(out_dir)


def calibration_texts(n: int = 16) -> list[str]:
    """Chat-formatted GSM8K solutions to calibrate quantization with (the last problems, not the first)."""
    return [f"{r['question']}\n{step_format(r['answer'])}" for r in gsm8k_rows()[-n:]]
