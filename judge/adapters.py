"""Input adapters: read attempts from quantmedic JSONL, ProcessBench-style JSON/JSONL, the GSM8K
model-solutions file, lighteval's details records (:mod:`quantmedic.judge.lighteval`), or generic ``problem`` +
``solution`` JSONL (split into steps by :mod:`quantmedic.judge.segment`). ``load_attempts`` detects the format
from the first record.

A reasoning model's thinking: in ``text`` records, a ``reasoning_content``, ``reasoning`` or ``thinking`` text
beside the solution is the thinking (else ``<think>`` markers in the solution, or a ``prompt`` that opened one,
are split by :func:`quantmedic.judge.step_format.split_output`); in ``quantmedic`` records, such a text (rather
than a ``thinking`` object) becomes the attempt's :class:`~quantmedic.taxonomy.records.Thinking`."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from quantmedic.taxonomy.errors import InputError, read_text, required_field
from quantmedic.taxonomy.jsonl import iter_json_lines, open_input, parse_json_line, validate_record
from quantmedic.taxonomy.records import Attempt, Problem

from .answers import extract_final_answer
from .lighteval import is_lighteval, lighteval_attempts
from .segment import split_steps
from .step_format import ModelOutput, split_output

FORMATS = ("auto", "quantmedic", "processbench", "gsm8k-solutions", "lighteval", "text")
REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
"""Fields that hold a reasoning model's thinking apart from its solution (the first present wins)."""
GSM8K_SOLUTION_SETS = ("6b_finetuning", "175b_verification")
_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")


def strip_calculator_notes(text: str) -> str:
    """Remove GSM8K's calculator annotations: ``16-3=<<16-3=13>>13`` → ``16-3=13``."""
    return _CALCULATOR_NOTE.sub("", text)


def _iter_json_array(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line, object)`` for each element of a JSON array file, with the element's line; anything
    but whitespace after the closing bracket is an error."""
    text = read_text(path, "input").removeprefix("\ufeff")
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text.startswith("[", pos):
        raise InputError(path, "expected a JSON array of objects", line=1)
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise InputError(path, "unterminated JSON array", line=text.count("\n") + 1)
        if text[pos] == "]":
            rest = len(text) - len(text[pos + 1:].lstrip())
            if rest < len(text):
                raise InputError(path, "not valid JSON (data after the closing ] of the array)",
                                 line=text.count("\n", 0, rest) + 1)
            return
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON ({exc.msg})", line=exc.lineno) from None
        if not isinstance(obj, dict):
            raise InputError(path, f"expected a JSON object, got {type(obj).__name__}", line=line)
        yield line, obj


def _as_bool(value) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"expected true/false, got {value!r}")


def _processbench(obj: dict, path: Path, line: int) -> Attempt:
    text = required_field(obj, "problem", str, path, line)
    steps = required_field(obj, "steps", list, path, line)
    if not steps:
        raise InputError(path, "no steps", line=line, field="steps")
    for i, step in enumerate(steps):
        if not isinstance(step, str) or not step.strip():
            raise InputError(path, "empty or non-text step", line=line, field=f"steps.{i}")
    label = obj.get("label")
    if label is not None and (not isinstance(label, int) or not -1 <= label < len(steps)):
        raise InputError(path, f"must be -1 or a step index below {len(steps)}", line=line, field="label")
    try:
        correct = _as_bool(obj.get("final_answer_correct"))
    except ValueError as exc:
        raise InputError(path, str(exc), line=line, field="final_answer_correct") from None
    problem = Problem(text=text, source="processbench", source_id=obj.get("id"),
                      reference_answer=obj.get("reference_answer"))
    return Attempt(problem=problem, steps=tuple(steps), model=obj.get("generator") or "unknown",
                   correct=correct, label=label, final_answer=extract_final_answer(steps[-1]),
                   source=str(path))


def _gsm8k_solutions(obj: dict, path: Path, line: int) -> list[Attempt]:
    question = required_field(obj, "question", str, path, line)
    truth = required_field(obj, "ground_truth", str, path, line)
    reference = strip_calculator_notes(truth)
    problem = Problem(text=question, reference_answer=extract_final_answer(reference),
                      reference_solution=reference, source="gsm8k", source_id=f"test-{line - 1}")
    attempts = []
    for key in GSM8K_SOLUTION_SETS:
        if key not in obj:
            continue
        entry = obj[key]
        solution = required_field(entry, "solution", str, path, line) if isinstance(entry, dict) else None
        if solution is None:
            raise InputError(path, "expected an object with is_correct and solution", line=line, field=key)
        try:
            correct = _as_bool(entry.get("is_correct"))
        except ValueError as exc:
            raise InputError(path, str(exc), line=line, field=f"{key}.is_correct") from None
        steps = split_steps(strip_calculator_notes(solution))
        if not steps:
            raise InputError(path, "empty solution", line=line, field=f"{key}.solution")
        attempts.append(Attempt(problem=problem, steps=tuple(steps), correct=correct,
                                model=f"gsm8k-{key.replace('_', '-')}", source=str(path),
                                final_answer=extract_final_answer(steps[-1])))
    return attempts


def _reasoning(obj: dict, path: Path, line: int) -> tuple[str | None, str | None]:
    """``(key, text)`` of the thinking a record gives apart from its solution, if any."""
    for key in REASONING_KEYS:
        value = obj.get(key)
        if value is None or (key == "thinking" and isinstance(value, dict)):
            continue
        if not isinstance(value, str):
            raise InputError(path, f"expected text, got {type(value).__name__}", line=line, field=key)
        return key, value
    return None, None


def _text(obj: dict, path: Path, line: int) -> Attempt:
    text_key = next((k for k in ("problem", "question") if k in obj), "problem")
    sol_key = next((k for k in ("solution", "response", "output") if k in obj), "solution")
    text = required_field(obj, text_key, str, path, line)
    solution = required_field(obj, sol_key, str, path, line)
    _, reasoning = _reasoning(obj, path, line)
    prompt = obj.get("prompt") if isinstance(obj.get("prompt"), str) else None
    if not solution.strip() and not (reasoning or "").strip():
        raise InputError(path, "empty solution", line=line, field=sol_key)
    thinking, steps, final = split_output(ModelOutput(solution, obj.get("finish_reason"), reasoning=reasoning,
                                                      prompt=prompt))
    try:
        correct = _as_bool(obj.get("correct", obj.get("is_correct")))
    except ValueError as exc:
        raise InputError(path, str(exc), line=line, field="correct") from None
    answer = obj.get("reference_answer", obj.get("answer"))
    problem = Problem(text=text, reference_answer=None if answer is None else str(answer), source=path.stem)
    return Attempt(problem=problem, steps=tuple(steps), correct=correct, model=str(obj.get("model", "unknown")),
                   final_answer=final, finish_reason=obj.get("finish_reason"), thinking=thinking, source=str(path))


def _quantmedic(obj: dict, path: Path, line: int) -> Attempt:
    """A quantmedic record; a thinking given as text (see the module docstring) becomes its Thinking."""
    key, reasoning = _reasoning(obj, path, line)
    if key is None:
        return validate_record(Attempt, obj, path, line)
    rest = {k: v for k, v in obj.items() if k != key}
    attempt = validate_record(Attempt, rest, path, line)
    thinking, _, _ = split_output(ModelOutput(attempt.solution_text, attempt.finish_reason, reasoning=reasoning))
    return validate_record(Attempt, {**rest, "thinking": thinking.model_dump() if thinking else None}, path, line)


def detect_format(obj: dict) -> str:
    """Name the format of one record: see :data:`FORMATS`."""
    if isinstance(obj.get("problem"), dict) and "steps" in obj:
        return "quantmedic"
    if "question" in obj and any(k in obj for k in GSM8K_SOLUTION_SETS):
        return "gsm8k-solutions"
    if "problem" in obj and isinstance(obj.get("steps"), list):
        return "processbench"
    if is_lighteval(obj):
        return "lighteval"
    return "text"


def _is_json_array(path: Path) -> bool:
    with open_input(path) as handle:
        head = handle.read(4096).lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[")


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    return _iter_json_array(path) if _is_json_array(path) else iter_json_lines(path)


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open_input(path) as handle:
        yield from enumerate(handle, start=1)


class DoneAttempt(NamedTuple):
    """An attempt whose id the caller says is already judged (see :func:`iter_attempts`): its id and grade only."""

    id: str
    correct: bool | None


class _Head(BaseModel):
    """The top-level fields of a quantmedic record read without validating the rest (pydantic-core's JSON
    parser skips the others, in any order)."""

    model_config = ConfigDict(extra="ignore")
    id: str = ""
    correct: bool | None = None


def _done_head(raw: bytes, done: Collection[str]) -> DoneAttempt | None:
    """Line ``raw`` as a :class:`DoneAttempt` when the record's own id is in ``done``; None when it is not, or
    when it cannot be read so (the full parse then reads it, and names what is wrong)."""
    try:
        head = _Head.model_validate_json(raw)
    except ValidationError:
        return None
    return DoneAttempt(head.id, head.correct) if head.id and head.id in done else None


def _line_mark(raw: bytes, line: int) -> bytes:
    """A :func:`_fingerprint` of a line's bytes (kind byte 2), never equal to a content fingerprint."""
    return hashlib.blake2b(raw.rstrip(), digest_size=12).digest() + b"\x02" + line.to_bytes(4, "big")


def _parse(obj: dict, kind: str, path: Path, line: int) -> list[Attempt]:
    if kind == "quantmedic":
        return [_quantmedic(obj, path, line)]
    if kind == "processbench":
        return [_processbench(obj, path, line)]
    if kind == "gsm8k-solutions":
        return _gsm8k_solutions(obj, path, line)
    if kind == "lighteval":
        return lighteval_attempts(obj, path, line)
    return [_text(obj, path, line)]


def _content(attempt: Attempt, explicit: bool) -> dict:
    """What makes two attempts under one id different: under an id the file gives, everything; under a
    derived id, everything but where they were read from."""
    if explicit:
        return attempt.model_dump(exclude={"id"})
    data = attempt.model_dump(exclude={"id", "source"})
    data["problem"] = {k: v for k, v in data["problem"].items() if k not in ("id", "source", "source_id")}
    return data


def _fingerprint(attempt: Attempt, explicit: bool, line: int) -> bytes:
    """The attempt's content digest, whether its id is explicit, and its line, in 17 bytes."""
    text = attempt.model_dump_json(exclude=_EXPLICIT_CONTENT if explicit else _DERIVED_CONTENT)
    return hashlib.blake2b(text.encode(), digest_size=12).digest() + bytes([explicit]) + line.to_bytes(4, "big")


_EXPLICIT_CONTENT = {"id": True}
_DERIVED_CONTENT = {"id": True, "source": True, "problem": {"id", "source", "source_id"}}
"""What :func:`_content` leaves out, for pydantic's (fast) serialiser."""


def _same_line(first: dict[str, bytes], attempt_id: str, mark: bytes) -> bool:
    """Whether ``mark`` is the first fingerprint under ``attempt_id`` (then kept) or the same as it."""
    earlier = first.setdefault(attempt_id, mark)
    return earlier is mark or earlier[:13] == mark[:13]


def _check_repeat(attempt: Attempt, explicit: bool, line: int, first: dict[str, bytes], path: Path, fmt: str) -> None:
    """A repeat of an earlier attempt is fine (it is judged once); another attempt under the same id is an error
    naming both lines: under an id the file gives, any difference; under an id derived from the same problem,
    steps, model and sample, a difference in anything but provenance (e.g. the grade or the human label). Only a
    fingerprint of each attempt is kept; the earlier one is read again to name what differs."""
    mark = _fingerprint(attempt, explicit, line)
    earlier = first.setdefault(attempt.id, mark)
    if earlier is mark or earlier[:13] == mark[:13]:
        return
    earlier_line = int.from_bytes(earlier[13:], "big")
    before = _content(_attempt_at(path, fmt, earlier_line, attempt.id), explicit)
    after = _content(attempt, explicit)
    if before == after:  # one record gave the id and the other derived it: the same attempt
        return
    differ = ", ".join(k for k in before if before[k] != after.get(k)) or "content"
    raise InputError(path, f"attempt {attempt.id!r} is also line {earlier_line}'s, with a different {differ}; give "
                           "each attempt its own id (exact repeats are judged once)", line=line, field="id")


def _attempt_at(path: Path, fmt: str, line: int, attempt_id: str) -> Attempt:
    """The attempt ``attempt_id`` of record ``line`` in ``path``, read again."""
    for number, obj in _records(path):
        if number == line:
            return next(a for a in _parse(obj, fmt, path, number) if a.id == attempt_id)
    raise AssertionError(f"{path}:{line} is gone")  # pragma: no cover


def iter_attempts(path: str | Path, fmt: str = "auto",
                  done: Collection[str] | None = None) -> Iterator[Attempt | DoneAttempt]:
    """Every attempt in ``path`` (JSON array or JSONL), one by one, in the given or detected format; memory
    stays small (a fingerprint per id). Two different attempts under one id (the same line twice is fine)
    are an :class:`InputError`, and so is a file with no records.

    ``done``: ids already judged. A JSONL ``quantmedic`` record whose own ``id`` is in it is not validated: it
    comes as a :class:`DoneAttempt`, and the digest of its line's bytes stands in for its content's in the
    repeat check (a line unlike its id's first one is parsed in full and checked as any other)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise InputError("--format", f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    first: dict[str, bytes] = {}
    fast = bool(done) and fmt in ("auto", "quantmedic") and not _is_json_array(path)
    for line, obj in _raw_lines(path) if fast else _records(path):
        if isinstance(obj, bytes):
            if fmt == "quantmedic" and (stub := _done_head(obj, done)) is not None \
                    and _same_line(first, stub.id, _line_mark(obj, line)):
                yield stub
                continue
            if (obj := parse_json_line(obj, path, line)) is None:
                continue
        kind = detect_format(obj) if fmt == "auto" else fmt
        if fmt == "auto":
            fmt = kind  # one file, one format: later records are held to the first one's
        explicit = kind == "quantmedic" and bool(obj.get("id"))
        for attempt in _parse(obj, kind, path, line):
            _check_repeat(attempt, explicit, line, first, path, fmt)
            yield attempt
    if not first:
        raise InputError(path, "no records")


def load_attempts(path: str | Path, fmt: str = "auto") -> list[Attempt]:
    """Every attempt in ``path``, as a list (see :func:`iter_attempts`)."""
    return list(iter_attempts(path, fmt))
