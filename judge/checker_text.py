"""The step checker's text normalization (:func:`normalize`): a step's arithmetic in plain notation.

LaTeX ``\\frac``, ``\\cdot``, ``\\times``, ``\\div``, ``^``, ``\\sqrt``, ``\\text{…}``; currency signs;
``× · ÷ −``; ``x`` between numbers when the step has no variable ``x``; list numbering. A step with modular
arithmetic, or an ``x`` left over as a variable, becomes ``Z`` (a letter: no chain). See
:mod:`quantmedic.judge.checker`.
"""

from __future__ import annotations

import re

_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_SQRT_TEX = re.compile(r"\\sqrt\s*\{([^{}]*)\}")
_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox|operatorname)\s*\{([^{}]*)\}(?:\s*\^\s*(?:\d|\{[^{}]*\}))?")
_THIN_THOUSANDS = re.compile(r"(?<=\d),\\!(?=\d{3})")  # 729,\!000
_OVERLINE = re.compile(r"\\overline\s*\{[^{}]*\}")  # a repeating decimal 0.\overline{3}: no number
_TEX_SPACE = re.compile(r"\\(?:left|right|[,;:! ]|quad|qquad|displaystyle|boxed|big|Big)(?![a-zA-Z])")
_TEX_OPS = {r"\cdot": "*", r"\times": "*", r"\div": "/", r"\approx": "≈", r"\%": "%", r"\$": "$"}
_TEX_OTHER = re.compile(r"\\[a-zA-Z]+")
_UNICODE = str.maketrans({"×": "*", "·": "*", "⋅": "*", "∗": "*", "÷": "/", "−": "-", "\u00a0": " ", "≃": "≈",
                          "≅": "≈", "{": "(", "}": ")", "[": " ", "]": " "})
_LIST_NUMBER = re.compile(r"^\s*\d+[.)]\s+", re.MULTILINE)
_TIMES_X = re.compile(r"(?<=[\d)%])\s*[xX]\s*(?=[$\d(])")
_X_VARIABLE = re.compile(r"(?<![A-Za-z])[xX](?![A-Za-z])")
_MODULAR = re.compile(r"\\p?mod(?![a-zA-Z])|\bmod\b|\\equiv|≡|\\bmod")
_CURRENCY = re.compile(r"[$€£¥₹](?=\s*[\d.(])|(?<=\d)[$€£¥₹]")


def _text_or_unit(match: re.Match) -> str:
    """``\\text{…}`` after a number is its unit (dropped, with its power: ``12\\text{ cm}^2``; but not cents, a
    different scale); elsewhere its words, which end a chain."""
    before = match.string[:match.start()].rstrip()
    if before[-1:].isdigit() and not re.search(r"\bcents?\b", match.group(1)):  # "$0.054 = 5.4 cents" rescales
        return " "
    applied = match.string[match.end():match.end() + 1] in ("(", "{")  # \text{mex}(1): a function's argument
    return f" {match.group(1)}" + ("" if applied else " ")


def _latex(text: str) -> str:
    for delimiter in (r"\(", r"\)", r"\[", r"\]", "$$"):
        text = text.replace(delimiter, "\n")  # a display or inline formula is a chain of its own
    text = _OVERLINE.sub("Z", _THIN_THOUSANDS.sub(",", text))
    text = _TEXT.sub(_text_or_unit, text)
    for _ in range(4):  # nested fractions and roots, innermost first
        text = _FRAC.sub(r"((\1)/(\2))", _SQRT_TEX.sub(r"√(\1)", text))
    for tex, plain in _TEX_OPS.items():
        text = text.replace(tex, f" {plain} " if plain not in "%$" else plain)
    text = _TEX_SPACE.sub(" ", text)
    return _TEX_OTHER.sub(" Z ", text)  # any other command (\pi, \alpha, \le): a letter, which ends a chain


def normalize(text: str) -> str:
    """A step's text with its arithmetic in plain notation: see the module docstring."""
    if _MODULAR.search(text):  # arithmetic modulo n: its "=" is no equality of numbers
        return "Z"
    if "\\" in text:
        text = _latex(text)
    text = _LIST_NUMBER.sub("", text.translate(_UNICODE)).replace("**", "^")
    text = re.sub(r"(?<=\s)[–—](?=\s)", "-", text)
    text = _CURRENCY.sub("", text).replace("$", " ")
    if "x" in text or "X" in text:
        text = _TIMES_X.sub(" * ", text)
        if _X_VARIABLE.search(text):  # an x left over is a variable: no x in this step is a product
            return "Z"
    return text
