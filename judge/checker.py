"""A deterministic step checker: the arithmetic a step claims (``a op b = c``, chains ``a + b = c = d``), exactly.

A step's text is normalized (LaTeX ``\\frac``, ``\\cdot``, ``\\times``, ``\\div``, ``^``, ``\\sqrt``, ``\\text{…}``;
currency signs; ``× · ÷ −``; ``x`` between numbers when the step has no variable ``x``; list numbering), then each
run of numbers, operators, parentheses, ``%`` and ``=`` / ``≈`` is split into the sides of a chain. A tiny parser
(thousands separators, decimals, ``+ - * / ^``, parentheses, postfix ``%``, ``√``) evaluates each side into an
*interval* of exact :class:`~fractions.Fraction` bounds: an integer is exact, a number written with k decimals may
have been rounded (±0.5·10^-k). ``L = R`` is false only when the intervals do not meet; after ``≈`` the last digit
may also be cut (``≈ 4.428`` for 31/7) and an integer rounded (``≈ 3``, ``≈ 140``). A bare ``p%`` is p or p/100.

Conservative (a claim it cannot read is never a finding): a side touching a letter, a time ``2:30``, a decimal
comma or a word such as ``of``, ``half``, ``times`` is dropped; two bare numbers (``10 = 5`` in "half of 10 = 5")
are no claim; a run-on ``5 * 2 = 10 + 3 = 13`` is ``5 * 2 = 10``, then ``10 + 3 = 13``; implicit products, unknowns,
modular arithmetic, division by zero, huge powers are unparsed; in a step that says it rounds (``remainder``,
``rounded down``, ``floor``, ``whole``, ``complete``) an integer within 1 of the true value is unparsed, not false
(``36/5 = 7 full pens, with a remainder of 1``). √ is evaluated to 40 digits. Normalization:
:mod:`quantmedic.judge.checker_text`. What this parser cannot read but sympy decides exactly (``\\sqrt{12} =
2\\sqrt{3}``, ``5! = 120``, an expansion in one or two letters) is checked by
:mod:`quantmedic.judge.checker_symbolic`, in worker processes under a timeout (counted, never a finding).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Context, Decimal
from fractions import Fraction
from math import isqrt

from pydantic import BaseModel, ConfigDict, Field

from . import checker_symbolic
from .checker_text import normalize

Interval = tuple[Fraction, Fraction]

EPS = Fraction(1, 10**12)
_SQRT = Context(prec=40)
LEFT_WORDS = frozenset(  # a word before a chain that may be part of its first side ("half of 10 = 5")
    "of times by half twice thrice double triple quadruple minus plus less more than over per divided multiplied "
    "into sqrt root square cube from subtract subtracting add adding multiply multiplying divide dividing and "
    "each every dozen x z sin cos tan log ln exp".split())
WHOLE_OF = frozenset(
    "total sum cost costs price weight capacity profit discount value length area volume distance number amount "
    "difference product average height width perimeter savings revenue income earnings bill balance loss tax fee "
    "score".split())  # "a total of 3 * 4 = 12": what follows "of" is the whole computation
RIGHT_WORDS = frozenset(
    "hundred thousand million billion trillion dozen dozens percent squared cubed times half halves thirds quarters "
    "x k z remainder rem r with".split())  # a word after a chain that may change its last number ("= 2 million")
ROUNDING = re.compile(r"\b(?:remainders?|round(?:ed|ing)?\s+(?:down|up)|floor|ceil(?:ing)?|whole|complete)\b",
                      re.IGNORECASE)  # a step that says its integer is a floor or a ceiling
_INTEGER = re.compile(r"\s*-?(?:\d{1,3}(?:,\d{3})+|\d+)\s*")


class Finding(BaseModel):
    """A false claim in one step."""
    model_config = ConfigDict(frozen=True, extra="forbid")

    attempt_id: str
    step: int = Field(ge=1, description="The step, 1-based.")
    expression: str = Field(description="The claimed computation, as normalized.")
    relation: str = Field("=", description="'=' or '≈'.")
    claimed: str = Field(description="The value the step claims.")
    true: str = Field(description="The computation's true value.")
    first_error: bool = Field(False, description="Whether this is the attempt's checked error (its first finding).")


@dataclass(frozen=True)
class StepCheck:
    """What one step's text claims: the false claims, how many were checked, how many could not be read."""
    false: tuple[tuple[str, str, str, str], ...] = ()  # (expression, relation, claimed, true)
    checked: int = 0
    unparsed: int = 0
    symbolic: int = 0  # claims decided by sympy (not in ``checked``)
    timeouts: int = 0  # claims sympy did not decide in time (not in ``unparsed``)


@dataclass(frozen=True)
class CheckedAttempt:
    """One attempt checked: its findings, its first step with a false claim (1-based, or None)."""
    attempt_id: str
    steps: int
    findings: tuple[Finding, ...]
    checked_error: int | None
    claims_checked: int
    claims_unparsed: int
    claims_symbolic: int = 0
    claims_timed_out: int = 0


_NUMBER = r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
_TOKEN = re.compile(rf"\s*({_NUMBER}|[-+*/^()%√])")
RUN = re.compile(rf"(?:{_NUMBER}|[-+*/^()%√=≈ \t])+")


class Unparsed(ValueError):
    """A side the parser cannot read (or evaluate safely)."""


def literal(token: str) -> Interval:
    """A written number as the interval it may have been rounded from."""
    digits = token.replace(",", "")
    value = Fraction(digits)
    if "." not in digits:
        return value, value
    half = Fraction(1, 2 * 10 ** len(digits.split(".")[1]))
    return value - half, value + half


def _mul(a: Interval, b: Interval) -> Interval:
    products = [x * y for x in a for y in b]
    return min(products), max(products)


def _div(a: Interval, b: Interval) -> Interval:
    if b[0] <= 0 <= b[1]:
        raise Unparsed("division by zero")
    return _mul(a, (1 / b[1], 1 / b[0]))


def _pow(a: Interval, b: Interval) -> Interval:
    if b[0] != b[1] or b[0].denominator != 1 or abs(b[0]) > 64 or max(abs(a[0]), abs(a[1])) > 10**12:
        raise Unparsed("power")
    e = int(b[0])
    if e < 0:
        a, e = _div((Fraction(1), Fraction(1)), a), -e
    ends = [a[0] ** e, a[1] ** e]
    if e % 2 == 0 and a[0] < 0 < a[1]:
        ends.append(Fraction(0))
    return min(ends), max(ends)


def _sqrt(a: Interval) -> Interval:
    if a[0] < 0 or a[1] > 10**30:
        raise Unparsed("sqrt")
    ends = []
    for x, outward in ((a[0], -1), (a[1], 1)):
        n, d = x.numerator, x.denominator
        exact = isqrt(n) ** 2 == n and isqrt(d) ** 2 == d
        ends.append(Fraction(isqrt(n), isqrt(d)) if exact else
                    Fraction((Decimal(n) / Decimal(d)).sqrt(_SQRT)) + outward * Fraction(1, 10**30))
    return ends[0], ends[1]


class _Parser:
    """Recursive descent: expr := term (+|- term)*; term := unary (*|/ unary)*; unary := (-|+) unary | power;
    power := postfix (^ unary)?; postfix := atom %?; atom := number | ( expr ) | √ atom."""

    def __init__(self, text: str):
        self.tokens, pos = [], 0
        for match in _TOKEN.finditer(text):
            if match.start() != pos:
                raise Unparsed(text)
            self.tokens.append(match.group(1))
            pos = match.end()
        if text[pos:].strip() or not self.tokens:
            raise Unparsed(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        if (token := self.peek()) is None:
            raise Unparsed("end")
        self.i += 1
        return token

    def parse(self) -> Interval:
        value = self.expr()
        if self.peek() is not None:
            raise Unparsed("trailing")
        return value

    def expr(self) -> Interval:
        value = self.term()
        while self.peek() in ("+", "-"):
            op, other = self.take(), self.term()
            value = ((value[0] + other[0], value[1] + other[1]) if op == "+" else
                     (value[0] - other[1], value[1] - other[0]))
        return value

    def term(self) -> Interval:
        value = self.unary()
        while self.peek() in ("*", "/"):
            value = (_mul if self.take() == "*" else _div)(value, self.unary())
        return value

    def unary(self) -> Interval:
        if self.peek() in ("-", "+"):
            sign = self.take()
            low, high = self.unary()
            return (-high, -low) if sign == "-" else (low, high)
        return self.power()

    def power(self) -> Interval:
        base = self.postfix()
        return _pow(base, (self.take(), self.unary())[1]) if self.peek() == "^" else base

    def postfix(self) -> Interval:
        value = self.atom()
        return (value[0] / 100, value[1] / 100) if self.peek() == "%" and self.take() else value

    def atom(self) -> Interval:
        token = self.take()
        if token == "(":
            value = self.expr()
            if self.take() != ")":
                raise Unparsed("parenthesis")
            return value
        if token == "√":
            return _sqrt(self.atom())
        if token[0].isdigit() or token[0] == ".":
            return literal(token)
        raise Unparsed(token)


_BARE = re.compile(rf"\s*-?{_NUMBER}\s*%?\s*")
_ADJACENT_LEFT = frozenset("_.,:;'\"\\#&@|~`")
_ADJACENT_RIGHT = frozenset("_\\:'\"#&@|~`")


def _left_tainted(text: str, start: int, side: str) -> bool:
    """Whether the first side of a run at ``start`` may be only part of what the text computes."""
    stripped = side.lstrip()
    if not stripped or stripped[0] in "+-*/^%)":
        return True
    if start == 0:
        return False
    before = text[start - 1]
    if not side[0].isspace():
        return before.isalnum() or before in _ADJACENT_LEFT
    words = re.search(r"(?:([A-Za-z]+)\s+)?([A-Za-z]+)\W*$", text[max(0, start - 40):start])
    if not words or not text[:start].rstrip()[-1:].isalpha() or words.group(2).lower() not in LEFT_WORDS:
        return False
    return not (words.group(2).lower() == "of" and (words.group(1) or "").lower() in WHOLE_OF)


def _right_tainted(text: str, end: int, side: str) -> bool:
    """Whether the last side of a run ending at ``end`` may be only part of the value the text states."""
    stripped = side.rstrip()
    if not stripped or stripped[-1] in "+-*/^(√":
        return True
    if end >= len(text):
        return False
    after = text[end]
    if not side[-1].isspace():
        if after in ".,":
            return end + 1 < len(text) and text[end + 1].isalnum()
        return after.isalnum() or after in _ADJACENT_RIGHT
    word = re.match(r"\s*([A-Za-z]+)(\s+\d+/)?", text[end:])  # "= 3 and 1/3": a mixed number
    return bool(word) and (word.group(1).lower() in RIGHT_WORDS or word.group(1) == "and" and bool(word.group(2)))


def _sides(text: str, match: re.Match) -> tuple[list[str | None], list[str]]:
    """The sides of the chain in one run (a dropped side is None) and the relations between them."""
    parts = re.split(r"([=≈])", match.group())
    sides: list[str | None] = parts[0::2]
    relations = parts[1::2]
    for i in range(1, len(sides) - 1):  # a middle side that starts with an operator continues an unseen name
        if sides[i].lstrip()[:1] in ("+", "*", "/", "^", "%", ")"):
            sides[i] = None
    if _left_tainted(text, match.start(), sides[0] or ""):
        sides[0] = None
    if _right_tainted(text, match.end(), sides[-1] or ""):
        sides[-1] = None
    return [s if s is not None and s.strip() else None for s in sides], relations


def _values(side: str) -> list[Interval]:
    """What a side may mean: its value, and for a bare ``p%`` also p itself. :class:`Unparsed` if unreadable."""
    value = _Parser(side).parse()
    if side.strip().endswith("%") and _BARE.fullmatch(side):
        return [value, _Parser(side.strip()[:-1]).parse()]
    return [value]


def _widened(side: str, relation: str, values: list[Interval]) -> list[Interval]:
    """After ``≈`` the last digit may be rounded or cut: ``≈ 4.428`` (31/7), ``≈ 3`` (10/3), ``≈ 140``."""
    number = side.strip().replace(",", "")
    if relation != "≈" or not re.fullmatch(r"-?\d*\.?\d+", number):
        return values
    places = len(number.split(".")[1]) if "." in number else len(number.rstrip("0")) - len(number)
    half = Fraction(1, 2) * Fraction(10) ** -places
    return [(low - half, high + half) for low, high in values]


def _meet(a: list[Interval], b: list[Interval]) -> bool:
    return any(x[0] <= y[1] + EPS * max(1, abs(y[1])) and y[0] <= x[1] + EPS * max(1, abs(x[1]))
               for x in a for y in b)


def _run_on(left: list[Interval], right: str) -> bool:
    """``5 * 2 = 10 + 3``: the right side starts with the left's value and goes on computing."""
    head = re.match(rf"\s*({_NUMBER})\s*[-+*/^]", right)
    return bool(head) and _meet(left, [literal(head.group(1))])


def fmt(x: Fraction) -> str:
    """An exact value: an integer, a terminating decimal, or a fraction with its decimal value."""
    if abs(x) >= 10**30 or (x and abs(x) < Fraction(1, 10**12)):
        return f"{Decimal(x.numerator) / Decimal(x.denominator):.6e}"
    if x.denominator == 1:
        return str(x.numerator)
    text = str(Decimal(x.numerator) / Decimal(x.denominator))
    return text if Fraction(Decimal(text)) == x else f"{x.numerator}/{x.denominator} (≈ {float(x):.6g})"


def _rounded(left: list[Interval], right: str) -> bool:
    """Whether ``right`` is an integer within 1 of the value (a floor or a ceiling, in a step that rounds)."""
    if not _INTEGER.fullmatch(right):
        return False
    claimed = Fraction(right.strip().replace(",", ""))
    return claimed - 1 < left[0][0] and left[0][1] < claimed + 1


def _check_pair(left: str, right: str, relation: str, rounds: bool = False) -> tuple[str, str, str, str] | None | bool:
    """True when the claim holds, the (expression, relation, claimed, true) of a false one, None if unreadable."""
    try:
        lv, rv = _values(left), _widened(right, relation, _values(right))
    except (Unparsed, ZeroDivisionError, OverflowError, ValueError, RecursionError):
        return None
    if _meet(lv, rv) or _run_on(lv, right):
        return True
    if rounds and _rounded(lv, right):
        return None  # "36/5 = 7 full pens (with a remainder of 1)": the step says it rounds
    low, high = lv[0]
    true = fmt(low) if low == high else f"≈ {float((low + high) / 2):.6g}"
    return " ".join(left.split()), relation, " ".join(right.split()), true


def symbolic_claims(text: str) -> list[checker_symbolic.Claim]:
    """The claims in ``text`` for sympy: :func:`~quantmedic.judge.checker_symbolic.candidates` that the interval
    parser cannot read."""
    return [c for c in checker_symbolic.candidates(text)
            if c.kind == "identity" or _check_pair(normalize(c.left), normalize(c.right), "=") is None]


def _symbolic(text: str, false: list) -> tuple[int, int]:
    """sympy's false claims appended to ``false``; (claims decided, claims timed out)."""
    claims = symbolic_claims(text)
    decided = timeouts = 0
    for claim, decision in zip(claims, checker_symbolic.decide(claims) if claims else ()):
        timeouts += decision.status == checker_symbolic.TIMEOUT
        decided += decision.status in (checker_symbolic.TRUE, checker_symbolic.FALSE)
        if decision.status == checker_symbolic.FALSE:
            false.append((" ".join(claim.left.split()), "=", " ".join(claim.right.split()), decision.true))
    return decided, timeouts


def check_text(text: str) -> StepCheck:
    """Every claim in one step's text: the false ones, the number checked and the number not readable."""
    norm = normalize(text)
    false, checked, unparsed = [], 0, 0
    rounds = bool(ROUNDING.search(text))
    for match in RUN.finditer(norm) if "=" in norm or "≈" in norm else ():
        run = match.group()
        if ("=" not in run and "≈" not in run) or not any(c.isdigit() for c in run):
            continue
        sides, relations = _sides(norm, match)
        raw = re.split(r"[=≈]", run)
        for i, relation in enumerate(relations):
            left, right = sides[i], sides[i + 1]
            if left is None or right is None:
                unparsed += bool(raw[i].strip() and raw[i + 1].strip())
                continue
            if _BARE.fullmatch(left) and (i == 0 or _BARE.fullmatch(right)):
                continue  # a bare number first, or two: a word before it may be doing the arithmetic
            result = _check_pair(left, right, relation, rounds)
            if result is None:
                unparsed += 1
                continue
            checked += 1
            if result is not True:
                false.append(result)
    symbolic, timeouts = _symbolic(text, false) if "=" in text else (0, 0)
    return StepCheck(tuple(false), checked, unparsed, symbolic, timeouts)


def check_steps(attempt_id: str, steps: tuple[str, ...] | list[str]) -> CheckedAttempt:
    """Check every step of one attempt; the first step with a false claim is its checked error."""
    findings: list[Finding] = []
    checked = unparsed = symbolic = timeouts = 0
    for number, step in enumerate(steps, start=1):
        result = check_text(step)
        checked += result.checked
        unparsed += result.unparsed
        symbolic += result.symbolic
        timeouts += result.timeouts
        for expression, relation, claimed, true in result.false:
            findings.append(Finding(attempt_id=attempt_id, step=number, expression=expression, relation=relation,
                                    claimed=claimed, true=true, first_error=not findings))
    return CheckedAttempt(attempt_id, len(steps), tuple(findings), findings[0].step if findings else None,
                          checked, unparsed, symbolic, timeouts)
