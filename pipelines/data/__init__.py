"""Real public data shipped with quantmedic (see ``data/README.md`` for sources and licences)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED = {
    "gsm8k-solutions": ("gsm8k/model_solutions.jsonl",
                        "1,319 GSM8K test problems with two models' graded solutions (OpenAI, MIT)"),
    "processbench-gsm8k": ("processbench/gsm8k.json",
                           "ProcessBench GSM8K split: 400 solutions with human first-error labels (Apache-2.0)"),
    "math500": ("math500/test.jsonl", "MATH-500 test problems (MIT)"),
    "gsm8k": ("gsm8k/test.jsonl", "GSM8K test problems (MIT)"),
    "aime24": ("aime24/test.jsonl", "AIME 2024 problems (MIT; problems (c) MAA)"),
    "aime90": ("aime/aime90.jsonl", "AIME 2022-2024, the AIME-90 of Quantization Hurts Reasoning? (MIT; problems (c) MAA)"),
    "aime25": ("aime/aime25.jsonl", "AIME 2025 I and II (Apache-2.0; problems (c) MAA)"),
    "r1-kv3-math500-traces": ("reasoning/r1distill15b_kvquant-kv3_MATH-500.json",
                              "100 real reasoning traces of DeepSeek-R1-Distill-Qwen-1.5B with a 3-bit KV cache on "
                              "MATH-500, lighteval's details format with its correctness labels (MIT)"),
}


def shipped_path(name: str) -> Path:
    """Path of a shipped data file by its short name (see :data:`SHIPPED`)."""
    relative, _ = SHIPPED[name]
    return Path(str(resources.files("quantmedic.pipelines.data").joinpath(relative)))


def resolve_input(value: str) -> Path:
    """A user's input: an existing path, else the name of a shipped data file."""
    path = Path(value)
    if not path.exists() and value in SHIPPED:
        return shipped_path(value)
    return path
