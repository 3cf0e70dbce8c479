"""The step checker's symbolic part: claims the interval parser cannot read but sympy decides exactly.

Two kinds of claim (:class:`Claim`), found cheaply (one regex decides whether a step has any):

* ``value``: a closed form with no unknowns, inside LaTeX math (``2\\sqrt{2} = \\sqrt{8}``, ``\\binom{5}{2} = 10``,
  ``\\log_2 8 = 3``, ``\\frac{\\pi}{3} \\cdot 3 = \\pi``, ``\\sin \\frac{\\pi}{6} = \\frac12``) or a plain factorial
  (``5! = 120``). A side with a decimal point, a comma, a degree sign, a bare ``\\log`` (which base?) or any
  letter is left alone, and so is ``\\pi = …`` (a convention, not a computation).
* ``identity``: in a step that says it transforms an expression (expand, simplify, factor, distribute, combine
  like terms) and not that it solves one, ``L = R`` in one or two letters where one side has parentheses or a
  fraction to work on and every side of its chain has a letter (``2x + 3 = 13`` is an equation, never a claim).
  True when ``L - R`` cancels to 0; false only for polynomials whose difference is below their degree (the leading
  terms agree: a slip in an expansion, not an equation being solved); anything else is unreadable.

sympy runs in worker processes (:class:`SymbolicPool`: ``python -c``, memory-capped), each claim under a timeout: a
claim that times out is unreadable and counted (:data:`TIMEOUT`), never a finding. Decisions are cached in this
process; :func:`decide` asks a lazily started one-worker pool for the misses, :func:`prefetch` a bigger pool.
"""

from __future__ import annotations

import atexit
import os
import re
import subprocess
import sys
import time
from collections import deque
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from typing import NamedTuple

TIMEOUT_S = 2.0
TRUE, FALSE, UNREADABLE, TIMEOUT = "true", "false", "unreadable", "timeout"
_MEMORY = 4 * 2**30


class Claim(NamedTuple):
    """``left = right`` as written; ``kind`` is ``value`` or ``identity``; ``latex`` whether the sides are LaTeX."""
    kind: str
    left: str
    right: str
    latex: bool = True


class Decision(NamedTuple):
    """What sympy made of a claim: ``status`` (:data:`TRUE`, :data:`FALSE`, :data:`UNREADABLE`, :data:`TIMEOUT`)
    and, for a false claim, the true value of its left side."""
    status: str
    true: str = ""


# --- finding the claims (cheap, in this process) ---------------------------------------------------------------

_TRIGGER = re.compile(r"\\(?:sqrt|d?binom|log_|ln|pi|sin|cos|tan)|[\d)}]\s*!|\b(?:expand|simplif|factor|distribut|"
                      r"combin)", re.IGNORECASE)
_TRANSFORM = re.compile(r"\b(?:expand(?:s|ed|ing)?|simplif(?:y|ies|ied|ying)|factor(?:s|ed|ing|i[sz]ation)?|"
                        r"distribut(?:e|es|ed|ing)|combin(?:e|es|ed|ing) like terms)\b", re.IGNORECASE)
_SOLVING = re.compile(r"\b(?:solv\w*|equations?|roots?|zeros?|substitut\w*|plug\w*|both sides|sides?|when|if|"
                      r"let|suppose|assume|set|setting|equal|equals|isolat\w*|unknown|find)\b", re.IGNORECASE)
_MODULAR = re.compile(r"\\p?mod(?![a-zA-Z])|\bmod\b|\\equiv|≡|\\bmod|\\pmod")
_MATH = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\$(.+?)\$", re.DOTALL)
_RELATION = re.compile(r"(=|\\approx|\\neq?|\\leq?|\\geq?|<|>|\\[lL]ongrightarrow|\\[rR]ightarrow|\\implies|"
                       r"\\to|\\iff|\\sim|\\equiv|:)")
_LINE_BREAK = re.compile(r"\\\\|\n|\\(?:begin|end)\{[a-z*]+\}|\\(?:text|mbox|qquad|quad)\b")
_VALUE_COMMANDS = re.compile(r"\\(?:sqrt|[dt]?frac|d?binom|log_|ln|pi|sin|cos|tan|cdot|times|div|left|right|"
                             r"boxed|displaystyle)(?![a-zA-Z])")
_IDENTITY_COMMANDS = re.compile(r"\\(?:[dt]?frac|cdot|times|left|right|displaystyle)(?![a-zA-Z])")
_SYMBOLIC = re.compile(r"\\(?:sqrt|d?binom|log_|ln|pi|sin|cos|tan)|!")
_BAD = re.compile(r"[.,°&|_]|\\circ|\\log(?!_)|\\[a-zA-Z]+")
_BEFORE_TAINT = re.compile(r"(?:[\d+\-*/^(=]|\\cdot|\\times|\b(?:times|of|by|plus|minus|over|divided|multiplied))"
                           r"\s*$")
_AFTER_TAINT = re.compile(r"^\s*(?:[\d+\-*/^(!%]|\\cdot|\\times|\b(?:times|squared|cubed|percent|over)\b)")
_PLAIN = re.compile(r"(?<![\w.,^*/+\-])[0-9+\-*/^() !]*\d!\s*[0-9+\-*/^() !]*=\s*[0-9+\-*/^() ]*\d(?![\w.,!^])")
_MAX_SIDE = 120
_JUXTAPOSED = re.compile(r"\(\s*[-+]?\d+\s*\)|\)\s*\d|\d\s+\d|\d\s*\\[dt]?frac|\}\s*\d|!!|\^\s*(?:\d+|\{[^{}]*\})\s*!|"
                         r"\\pi\s*\(")  # what latex2sympy reads otherwise than a reader: "3(2)" is 5, "2 3" is 5


def _ambiguous(side: str) -> bool:
    side = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", re.sub(r"\\[,;!: ]", " ", side))
    side = re.sub(r"\\log_(?:\{[^{}]*\}|\d)", r"\\log ", side)
    return bool(_JUXTAPOSED.search(side))


def _value_side(side: str) -> bool:
    rest = _VALUE_COMMANDS.sub(" ", side)
    if _ambiguous(side) or _BAD.search(rest) or re.search(r"[A-Za-z]", rest):
        return False
    return bool(re.search(r"\d|\\pi", side))


def _letters(side: str) -> set[str] | None:
    """The one or two single letters of an identity's side, or None where it has other words or commands."""
    rest = _IDENTITY_COMMANDS.sub(" ", side)
    if _ambiguous(side) or _BAD.search(rest) or "!" in rest or re.search(r"[A-Za-z]{3,}", rest):
        return None
    letters = set(re.findall(r"[A-Za-z]", rest))
    return letters if 0 < len(letters) <= 2 and not letters & set("eEiI") else None


def _identity_shape(left: str, right: str) -> bool:
    """Something to transform on one side (parentheses, a fraction), neither side a bare letter or number."""
    work = re.compile(r"[()]|\\left|\\[dt]?frac")
    return bool(work.search(left) or work.search(right)) and all(re.search(r"[-+*/^()]|\\|\d[A-Za-z]|[A-Za-z]{2}",
                                                                      s.strip()) for s in (left, right))


def _value_pair(left: str, right: str) -> bool:
    """Both sides closed forms, one with something only sympy reads; trigonometry only with a π in its side."""
    if not (_value_side(left) and _value_side(right)) or not _SYMBOLIC.search(left + right):
        return False
    if (left == "\\pi") != (right == "\\pi") and "\\pi" not in (right if left == "\\pi" else left):
        return False  # "\\pi = \\frac{22}{7}": a convention, not a computation
    return all("\\pi" in s or not re.search(r"\\(?:sin|cos|tan)", s) for s in (left, right))


def _segment_claims(sides: list[str], relations: list[str], transform: bool) -> list[Claim]:
    found = []
    letters = [_letters(s) for s in sides]
    chain_of_expressions = all(letters) and len({frozenset(x) for x in letters}) == 1
    for i, relation in enumerate(relations):
        left, right = sides[i].strip(), sides[i + 1].strip()
        if relation != "=" or not left or not right or max(len(left), len(right)) > _MAX_SIDE:
            continue
        if _value_pair(left, right):
            found.append(Claim("value", left, right))
        elif transform and chain_of_expressions and _identity_shape(left, right):
            found.append(Claim("identity", left, right))
    return found


def _segments(text: str) -> list[tuple[str, str, str]]:
    """Each math formula as (text before it, its body, text after it)."""
    return [(text[max(0, m.start() - 30):m.start()], next(g for g in m.groups() if g is not None),
             text[m.end():m.end() + 30]) for m in _MATH.finditer(text)]


def candidates(text: str) -> list[Claim]:
    """The claims in one step's text that only sympy can decide (see the module docstring); [] at no cost for
    a step without a root, factorial, binomial, logarithm, π, trigonometry or a word that transforms."""
    if not _TRIGGER.search(text) or _MODULAR.search(text):
        return []
    transform = bool(_TRANSFORM.search(text)) and not _SOLVING.search(_MATH.sub(" ", text))
    found: list[Claim] = []
    for before, body, after in _segments(text):
        lines = _LINE_BREAK.split(body)
        for number, line in enumerate(lines):
            if "=" not in line:
                continue
            parts = _RELATION.split(line)
            sides, relations = parts[0::2], parts[1::2]
            if number == 0 and _BEFORE_TAINT.search(before):
                sides[0] = ""
            if number == len(lines) - 1 and _AFTER_TAINT.search(after):
                sides[-1] = ""
            found += _segment_claims(sides, relations, transform)
    for match in _PLAIN.finditer(_MATH.sub(" ", text)):  # a factorial on the left of a plain "="
        left, _, right = match.group().partition("=")
        if "!" in left and "=" not in right and not (_ambiguous(left) or _ambiguous(right)):
            found.append(Claim("value", left.strip(), right.strip(), latex=False))
    return found


# --- deciding a claim (in a worker process) ----------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _parse(side: str, latex: bool):
    import sympy
    if latex:
        from latex2sympy2_extended import latex2sympy
        expr = latex2sympy(side)
    else:
        from sympy.parsing.sympy_parser import convert_xor, factorial_notation, parse_expr, standard_transformations
        if re.search(r"[^0-9+\-*/^() !]", side):
            raise ValueError("only digits, operators, parentheses, ^ and ! are parsed")
        expr = parse_expr(side, global_dict={"Integer": sympy.Integer, "factorial": sympy.factorial},
                          local_dict={}, transformations=standard_transformations + (factorial_notation, convert_xor))
    if not isinstance(expr, sympy.Expr) or expr.atoms(sympy.core.function.AppliedUndef):
        raise ValueError("not an expression")
    return expr


def _shown(expr) -> str:
    import sympy
    value = sympy.simplify(expr)
    if value.is_Rational:
        return str(value)
    return f"{value} (≈ {sympy.N(value, 8)})"


def _decide_value(left, right) -> Decision:
    """True when ``L - R`` expands (or simplifies) to 0; false when it is a real number clearly not 0 at 40 digits."""
    import sympy
    if left.free_symbols or right.free_symbols:
        return Decision(UNREADABLE)
    difference = sympy.expand(left - right)
    if difference == 0:
        return Decision(TRUE)
    gap, size = sympy.N(difference, 40), sympy.N(left, 40)
    if gap.is_real and size.is_real and abs(gap) > sympy.Float("1e-12") * max(1, abs(size)):
        return Decision(FALSE, _shown(left))
    return Decision(TRUE if sympy.simplify(difference) == 0 else UNREADABLE)


def _decide_identity(left, right) -> Decision:
    import sympy
    symbols = left.free_symbols | right.free_symbols
    if not symbols or len(symbols) > 2 or left.free_symbols != right.free_symbols:
        return Decision(UNREADABLE)
    if not (left.is_rational_function(*symbols) and right.is_rational_function(*symbols)):
        return Decision(UNREADABLE)
    if sympy.cancel(left - right) == 0:
        return Decision(TRUE)
    if not (left.is_polynomial(*symbols) and right.is_polynomial(*symbols)):
        return Decision(UNREADABLE)
    degree = max(sympy.Poly(left, *symbols).total_degree(), sympy.Poly(right, *symbols).total_degree())
    if sympy.Poly(left - right, *symbols).total_degree() < degree:  # the leading terms agree: a slip, not an equation
        return Decision(FALSE, str(sympy.expand(left)))
    return Decision(UNREADABLE)


def decide_one(claim: Claim) -> Decision:
    """One claim decided by sympy, in this process and without a timeout (workers call this)."""
    try:
        left, right = _parse(claim.left, claim.latex), _parse(claim.right, claim.latex)
        return (_decide_value if claim.kind == "value" else _decide_identity)(left, right)
    except (Exception, RecursionError, MemoryError):  # noqa: BLE001 - whatever sympy cannot read is unreadable
        return Decision(UNREADABLE)


def serve() -> None:
    """A worker (``python -c``, so nothing of the caller's ``__main__`` runs): memory capped, sympy imported, then
    one decision per claim read from stdin, written to the original stdout (print goes to stderr)."""
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY, _MEMORY))
    except (ImportError, ValueError, OSError):
        pass
    reader, writer = Connection(os.dup(0), writable=False), Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    decide_one(Claim("value", "\\sqrt{4}", "2"))  # imports sympy and latex2sympy before saying it is ready
    writer.send("ready")
    while True:
        try:
            claim = reader.recv()
        except (EOFError, OSError):
            return
        writer.send(decide_one(Claim(*claim)))


# --- worker processes, timeouts and the cache (in this process) --------------------------------------------------

class _Worker:
    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", f"from {__name__} import serve; serve()"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.writer = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.conn = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()

    def ready(self) -> _Worker:
        """This worker once it has imported sympy (RuntimeError if it did not start)."""
        try:
            if self.conn.poll(120) and self.conn.recv() == "ready":
                return self
        except (EOFError, OSError):
            pass
        self.kill()
        raise RuntimeError("the sympy worker did not start")

    def send(self, claim: Claim) -> None:
        self.writer.send(tuple(claim))

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)
        self.conn.close()
        self.writer.close()


class SymbolicPool:
    """``size`` sympy worker processes; :meth:`decide` gives each claim ``timeout`` seconds, killing (and later
    restarting) a worker that runs over. A context manager; :meth:`close` ends the workers."""

    def __init__(self, size: int = 1, timeout: float = TIMEOUT_S):
        self.size, self.timeout = max(1, size), timeout
        self._idle: list[_Worker] = []
        self.timeouts = 0

    def __enter__(self) -> SymbolicPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().kill()

    def decide(self, claims: list[Claim]) -> list[Decision]:
        """Each claim's decision, in order, the claims spread over the workers."""
        results: list[Decision] = [Decision(UNREADABLE)] * len(claims)
        queue, busy = deque(range(len(claims))), {}
        starting = [_Worker() for _ in range(min(self.size, len(claims)) - len(self._idle))]  # all at once
        self._idle += [worker.ready() for worker in starting]
        while queue or busy:
            while queue and len(busy) < self.size:
                worker = self._idle.pop() if self._idle else _Worker().ready()
                index = queue.popleft()
                worker.send(claims[index])
                busy[worker.conn] = (worker, index, time.monotonic() + self.timeout)
            soonest = min(deadline for _, _, deadline in busy.values())
            for conn in wait(list(busy), timeout=max(0.0, soonest - time.monotonic())):
                worker, index, _ = busy.pop(conn)
                try:
                    results[index] = conn.recv()
                    self._idle.append(worker)
                except (EOFError, OSError):  # the worker died (memory): unreadable
                    worker.kill()
            for conn, (worker, index, deadline) in list(busy.items()):
                if deadline <= time.monotonic():
                    del busy[conn]
                    worker.kill()
                    results[index] = Decision(TIMEOUT)
                    self.timeouts += 1
        return results


_CACHE: dict[Claim, Decision] = {}
_CACHE_SIZE = 100_000
_default: SymbolicPool | None = None


def _default_pool() -> SymbolicPool:
    global _default
    if _default is None:
        _default = SymbolicPool(1)
        atexit.register(_default.close)
    return _default


def prefetch(claims: list[Claim], pool: SymbolicPool | None = None) -> None:
    """Decide the claims not yet cached (with ``pool``, or the default one-worker pool) and cache them."""
    missing = list(dict.fromkeys(c for c in claims if c not in _CACHE))
    if not missing:
        return
    if len(_CACHE) + len(missing) > _CACHE_SIZE:
        _CACHE.clear()
    try:
        decisions = (pool or _default_pool()).decide(missing)
    except (RuntimeError, OSError):  # no worker could start: nothing symbolic is readable
        decisions = [Decision(UNREADABLE)] * len(missing)
    _CACHE.update(zip(missing, decisions))


def decide(claims: list[Claim]) -> list[Decision]:
    """Each claim's decision: from the cache, the misses decided in a worker under the timeout."""
    prefetch(claims)
    return [_CACHE.get(c, Decision(UNREADABLE)) for c in claims]
