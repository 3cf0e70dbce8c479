"""Counting a judge's tokens before anything is sent: for the windows of a long thinking and the cost line.

A window must fit the judge's context exactly, and characters are a poor guide: SmolLM2's tokenizer
reads R1's thinking at 2.3 characters a token on the median trace and at 1.1 on the worst (text in
Chinese), not the 3.5 of English prose. So a judge's own tokenizer counts when it is known: the
embedded judge's GGUF always, and ``--tokenizer`` (a ``.gguf`` file, or an HF ``tokenizer.json``) for
any other judge. Without one, tokens are estimated as characters / ``chars_per_token``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from quantmedic.taxonomy.errors import InputError


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of a text; ``label`` names how (it is part of a thinking verdict's configuration)."""

    label: str
    count: Callable[[str], int] = field(compare=False, repr=False)
    exact: bool = False

    def __call__(self, text: str) -> int:
        return self.count(text)


def estimating(chars_per_token: float) -> TokenCounter:
    """Tokens estimated from characters, rounded up.

    >>> estimating(2.5)("x" * 11)
    5
    """
    return TokenCounter(f"chars/{chars_per_token:g}", lambda text: math.ceil(len(text) / chars_per_token))


def counting_with(path: Path) -> TokenCounter:
    """The exact count of a ``.gguf`` model's vocabulary (llama.cpp, vocabulary only) or of an HF
    ``tokenizer.json`` (the ``tokenizers`` package); a file that is neither is refused (exit 2)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("--tokenizer", f"{path} is not a file (a .gguf model or a tokenizer.json)", usage=True)
    try:
        count = _gguf_count(str(path)) if path.suffix == ".gguf" else _hf_count(str(path))
    except Exception as error:  # noqa: BLE001 (a loader fails in many ways: say which, in one line)
        raise InputError("--tokenizer", f"cannot read {path} as a tokenizer ({type(error).__name__}: "
                         f"{str(error)[:200]})", usage=True) from None
    return TokenCounter(f"tokenizer:{path.name}", count, exact=True)


@lru_cache(maxsize=4)
def _gguf_count(path: str) -> Callable[[str], int]:
    import llama_cpp

    model = llama_cpp.Llama(path, vocab_only=True, verbose=False)
    return lambda text: len(model.tokenize(text.encode("utf-8"), add_bos=False, special=False))


@lru_cache(maxsize=4)
def _hf_count(path: str) -> Callable[[str], int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)
