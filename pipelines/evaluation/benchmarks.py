"""Benchmark problems as :class:`Problem` records: the shipped sets, local JSONL, Hugging Face datasets.

``load_benchmark`` resolves its first argument in this order: a shipped name (``math500``,
``gsm8k``, ``aime24``, ``aime90``, ``aime25``, ``aime120``; offline: :data:`SHIPPED_BENCHMARKS`), an existing
local JSONL file, a benchmark known on the Hub (``gpqa-diamond``: :data:`HUB_BENCHMARKS`), else a Hugging
Face dataset name (``datasets.load_dataset``, imported only then). Rows become problems through one field mapping
(:data:`FIELDS` → the row's keys), detected from the first row and overridden by ``fields``.

Conventions: a reference answer holding a GSM8K ``#### 18`` line becomes ``18`` (the full text,
calculator notes removed, is kept as the reference solution); a ``choices`` mapping (one list
field, or several option fields) makes a multiple-choice problem whose reference answer is the
choice LETTER (given as a letter, a 0-based index, or the text of the right option).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from quantmedic.judge.adapters import strip_calculator_notes
from quantmedic.taxonomy.errors import InputError
from quantmedic.taxonomy.jsonl import iter_json_lines
from quantmedic.taxonomy.records import Problem

from quantmedic.pipelines.data import shipped_path

FIELDS = ("text", "reference_answer", "reference_solution", "source_id", "subject", "level", "choices")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

@dataclass(frozen=True)
class ShippedSet:
    """One shipped benchmark file: its problems' source, the shipped-data name, the mapping of its rows,
    and its conventions (row-number ids, an instruction to strip from the text, integer answers)."""

    source: str
    data: str
    fields: Mapping[str, Any]
    row_ids: str | None = None  # source ids "<row_ids><0-based row>" for a file without ids
    strip: str | None = None  # removed from the end of each problem text (an instruction baked into it)
    integer_answers: bool = False  # "024" -> "24", 70 -> "70": what math-verify compares


_AIME_STRIP = "Please reason step by step, and put your final answer within \\boxed{}."
_AIME90 = ShippedSet("aime90", "aime90", {"text": "problem", "reference_answer": "answer", "source_id": "id"},
                     integer_answers=True)
_AIME25 = ShippedSet("aime25", "aime25", {"text": "prompt", "reference_answer": "answer"}, row_ids="aime25-",
                     strip=_AIME_STRIP, integer_answers=True)

SHIPPED_BENCHMARKS: dict[str, tuple[ShippedSet, ...]] = {
    "math500": (ShippedSet("math500", "math500", {"text": "problem", "reference_answer": "answer",
                                                  "reference_solution": "solution", "source_id": "unique_id",
                                                  "subject": "subject", "level": "level"}),),
    "gsm8k": (ShippedSet("gsm8k", "gsm8k", {"text": "question", "reference_answer": "answer"}, row_ids="test-"),),
    "aime24": (ShippedSet("aime24", "aime24", {"text": "problem", "reference_answer": "answer",
                                               "reference_solution": "solution", "source_id": "id"}),),
    "aime90": (_AIME90,),
    "aime25": (_AIME25,),
    "aime120": (_AIME90, _AIME25),
}
"""The shipped benchmarks (offline): each name's files in order; ``aime120`` is AIME-90 and AIME 2025, each
problem keeping its own source (so its id is the one it has in ``aime90`` or ``aime25``)."""


@dataclass(frozen=True)
class HubBenchmark:
    """A benchmark known by name and loaded from the Hugging Face Hub (never shipped)."""

    dataset: str
    config: str | None
    split: str
    fields: Mapping[str, Any]
    shuffle_choices: bool = False
    gated: bool = False  # its terms must be accepted on the Hub (kept off the web against contamination)


HUB_BENCHMARKS: dict[str, HubBenchmark] = {
    "gpqa-diamond": HubBenchmark(
        "Idavidrein/gpqa", "gpqa_diamond", "train",
        {"text": "Question", "reference_answer": "Correct Answer", "subject": "High-level domain",
         "choices": ["Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]},
        shuffle_choices=True, gated=True),
}
"""Benchmarks by name from the Hub: ``gpqa-diamond`` (198 questions, four options shuffled by a seed drawn from
each question; gated: accept its terms at huggingface.co/datasets/Idavidrein/gpqa and log in)."""

# Candidate keys tried, in order, when a field is not mapped explicitly.
_DETECT: dict[str, tuple[str, ...]] = {
    "text": ("problem", "question", "Question", "prompt"),
    "reference_answer": ("answer", "reference_answer", "Answer", "final_answer", "target"),
    "reference_solution": ("solution", "reference_solution", "Solution", "explanation"),
    "source_id": ("unique_id", "id", "idx", "ID"),
    "subject": ("subject", "type", "category", "Subject"),
    "level": ("level", "difficulty", "Level"),
    "choices": ("choices", "options"),
}
_HASHES = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
_LETTER = re.compile(r"^\(?([A-Za-z])\)?\.?$")


def choice_letter(index: int) -> str:
    """The letter of the ``index``-th option (0-based).

    >>> choice_letter(0), choice_letter(3)
    ('A', 'D')
    """
    if not 0 <= index < len(LETTERS):
        raise ValueError(f"no choice letter for index {index}")
    return LETTERS[index]


def gsm8k_answer(text: str) -> str | None:
    """The final answer of a GSM8K-style answer text (after its last ``#### ``), else None.

    >>> gsm8k_answer("3 + 4 = <<3+4=7>>7\\n#### 7")
    '7'
    >>> gsm8k_answer("7") is None
    True
    """
    found = _HASHES.findall(text)
    return found[-1] if found else None


def field_mapping(first_row: Mapping[str, Any], fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The mapping used for every row: keys detected in ``first_row``, overridden by ``fields``.

    A field mapped to None is left out.

    >>> field_mapping({"question": "1+1?", "answer": "2", "id": 7})
    {'text': 'question', 'reference_answer': 'answer', 'source_id': 'id'}
    >>> field_mapping({"q": "1+1?", "answer": "2"}, {"text": "q", "reference_answer": None})
    {'text': 'q'}
    """
    fields = dict(fields or {})
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}; map any of {', '.join(FIELDS)}")
    mapping: dict[str, Any] = {}
    for name in FIELDS:
        if name in fields:
            if fields[name] is not None:
                mapping[name] = fields[name]
            continue
        key = next((k for k in _DETECT[name] if k in first_row), None)
        if key is not None:
            mapping[name] = key
    return mapping


def _get(row: Mapping[str, Any], key: str, where: str, line: int | None) -> Any:
    if key not in row:
        raise InputError(where, "missing", line=line, field=key)
    return row[key]


def _text(value: Any, key: str, where: str, line: int | None, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(where, f"expected text, got {type(value).__name__}", line=line, field=key)
    text = str(value).strip()
    if required and not text:
        raise InputError(where, "empty", line=line, field=key)
    return text


def _options(row: Mapping[str, Any], spec: Any, where: str, line: int | None) -> list[str]:
    if isinstance(spec, str):
        value = _get(row, spec, where, line)
        if not isinstance(value, (list, tuple)):
            raise InputError(where, f"expected a list of options, got {type(value).__name__}", line=line, field=spec)
        options = [_text(v, f"{spec}.{i}", where, line, required=True) for i, v in enumerate(value)]
    elif isinstance(spec, Sequence):
        options = [_text(_get(row, key, where, line), key, where, line, required=True) for key in spec]
    else:
        raise ValueError("map choices to a list field (a name) or to several option fields (a list of names)")
    if not 2 <= len(options) <= len(LETTERS):
        raise InputError(where, f"expected 2 to {len(LETTERS)} options, got {len(options)}", line=line,
                         field=spec if isinstance(spec, str) else None)
    return options  # type: ignore[return-value]


def _answer_index(value: Any, options: list[str], key: str, where: str, line: int | None) -> int:
    """Index of the right option, given as a letter, a 0-based index or the option's text."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(options):
            return value
    elif isinstance(value, str):
        text = value.strip()
        match = _LETTER.match(text)
        if match and LETTERS.index(match.group(1).upper()) < len(options):
            return LETTERS.index(match.group(1).upper())
        if text in options:
            return options.index(text)
    raise InputError(where, f"{value!r} is neither a choice letter, a 0-based index nor the text of an option",
                     line=line, field=key)


def _shuffled(options: list[str], right: int, text: str) -> tuple[list[str], int]:
    """Options in an order fixed by the problem text (the same on every machine), and the new index."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    order = list(range(len(options)))
    random.Random(seed).shuffle(order)
    return [options[i] for i in order], order.index(right)


def problem_from_row(row: Mapping[str, Any], mapping: Mapping[str, Any], *, source: str, where: str,
                     line: int | None = None, shuffle_choices: bool = False) -> Problem:
    """One row as a :class:`Problem`; a mapped key missing from the row raises :class:`InputError`.

    >>> p = problem_from_row({"q": "2+2?", "opts": ["3", "4"], "a": 1},
    ...                      {"text": "q", "choices": "opts", "reference_answer": "a"}, source="toy", where="toy")
    >>> p.choices, p.reference_answer
    (('3', '4'), 'B')
    """
    if "text" not in mapping:
        raise InputError(where, "no problem text: map it with fields={'text': ...}", line=line, field="text")
    values: dict[str, Any] = {"source": source}
    values["text"] = _text(_get(row, mapping["text"], where, line), mapping["text"], where, line, required=True)
    for name in ("reference_solution", "source_id", "subject"):
        if name in mapping:
            values[name] = _text(_get(row, mapping[name], where, line), mapping[name], where, line)
    if "level" in mapping:
        level = _get(row, mapping["level"], where, line)
        if level is not None and (isinstance(level, bool) or not isinstance(level, (int, str))):
            raise InputError(where, f"expected a number or text, got {type(level).__name__}", line=line,
                             field=mapping["level"])
        values["level"] = level
    answer_key = mapping.get("reference_answer")
    raw_answer = _get(row, answer_key, where, line) if answer_key else None
    if "choices" in mapping:
        options = _options(row, mapping["choices"], where, line)
        if raw_answer is None:
            raise InputError(where, "a multiple-choice problem needs its answer", line=line,
                             field=answer_key or "reference_answer")
        spec = mapping["choices"]
        if not isinstance(spec, str) and answer_key in spec:  # GPQA: the answer is one of the option fields
            right = list(spec).index(answer_key)
        else:
            right = _answer_index(raw_answer, options, answer_key, where, line)  # type: ignore[arg-type]
        if shuffle_choices:
            options, right = _shuffled(options, right, values["text"])
        values["choices"] = tuple(options)
        values["reference_answer"] = choice_letter(right)
    elif raw_answer is not None:
        answer = _text(raw_answer, answer_key, where, line)  # type: ignore[arg-type]
        final = gsm8k_answer(answer) if answer else None
        if final is not None:
            if values.get("reference_solution") is None:
                values["reference_solution"] = strip_calculator_notes(answer)  # type: ignore[arg-type]
            answer = final
        values["reference_answer"] = answer or None
    return Problem(**values)


def problems_from_rows(rows: Iterable[tuple[int | None, Mapping[str, Any]]], *, source: str, where: str,
                       fields: Mapping[str, Any] | None = None, limit: int | None = None,
                       shuffle_choices: bool = False) -> list[Problem]:
    """Rows ``(line, row)`` as problems, with the mapping detected from the first row."""
    problems: list[Problem] = []
    mapping: dict[str, Any] | None = None
    for line, row in rows:
        if limit is not None and len(problems) >= limit:
            break
        if mapping is None:
            mapping = field_mapping(row, fields)
        problems.append(problem_from_row(row, mapping, source=source, where=where, line=line,
                                         shuffle_choices=shuffle_choices))
    if not problems:
        raise InputError(where, "no problems")
    return problems


def _shipped_rows(shipped: ShippedSet, path: Path) -> Iterator[tuple[int | None, dict[str, Any]]]:
    """The file's rows with its conventions applied (ids, stripped instruction, integer answers)."""
    text_key, answer_key = shipped.fields["text"], shipped.fields["reference_answer"]
    for index, (line, row) in enumerate(iter_json_lines(path)):
        row = dict(row)
        if shipped.strip and isinstance(row.get(text_key), str):
            row[text_key] = row[text_key].rstrip().removesuffix(shipped.strip).rstrip()
        answer = row.get(answer_key)
        if shipped.integer_answers and isinstance(answer, (int, str)) and str(answer).strip().isdigit():
            row[answer_key] = str(int(str(answer).strip()))
        if shipped.row_ids is not None:
            row["source_id"] = f"{shipped.row_ids}{index}"
        yield line, row


def _load_shipped(name: str, split: str | None, limit: int | None) -> list[Problem]:
    if split not in (None, "test"):
        raise ValueError(f"{name} ships only its test split, not {split!r}")
    problems: list[Problem] = []
    for shipped in SHIPPED_BENCHMARKS[name]:
        if limit is not None and len(problems) >= limit:
            break
        path = shipped_path(shipped.data)
        fields = {**shipped.fields, **({"source_id": "source_id"} if shipped.row_ids is not None else {})}
        problems += problems_from_rows(_shipped_rows(shipped, path), source=shipped.source, where=str(path),
                                       fields=fields, limit=None if limit is None else limit - len(problems))
    return problems


def _load_hub(name: str, split: str | None, fields: Mapping[str, Any] | None, limit: int | None,
              shuffle_choices: bool, config: str | None, source: str | None,
              options: Mapping[str, Any], known: str | None = None) -> list[Problem]:
    """A Hub dataset's problems; ``known``: the benchmark name it was asked for (then a failure says how to get it)."""
    label = known or name
    try:
        import datasets  # lazy: heavy, and only needed for Hub (or datasets-loadable) sets
    except ModuleNotFoundError:
        raise InputError(label, 'is neither a shipped benchmark nor a file; a Hugging Face dataset needs '
                                'pip install "quantmedic[hf]"') from None
    split = split or "test"
    try:
        dataset = datasets.load_dataset(name, config, split=split, **options)
    except Exception as error:  # noqa: BLE001 - whatever the Hub or the loader says, in one line
        why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if known is not None and HUB_BENCHMARKS[known].gated:
            raise InputError(label, f"the gated Hugging Face dataset {name} ({config}) cannot be loaded ({why}); "
                                    f"accept the dataset's terms at https://huggingface.co/datasets/{name} and log "
                                    "in (hf auth login, or set HF_TOKEN)") from None
        raise InputError(label, f"is neither a shipped benchmark nor a file, and the Hugging Face dataset cannot be "
                                f"loaded ({why})") from None
    where = f"{name}{f'/{config}' if config else ''}[{split}]"
    rows = ((i + 1, row) for i, row in enumerate(dataset))
    return problems_from_rows(rows, source=source or (name if config is None else f"{name}/{config}"), where=where,
                              fields=fields, limit=limit, shuffle_choices=shuffle_choices)


def load_benchmark(name_or_path: str | Path, *, split: str | None = None, fields: Mapping[str, Any] | None = None,
                   limit: int | None = None, shuffle_choices: bool = False, config: str | None = None,
                   source: str | None = None, **dataset_options: Any) -> list[Problem]:
    """Load a benchmark's problems.

    ``name_or_path``: a shipped name (:data:`SHIPPED_BENCHMARKS`, offline), a local JSONL file, a name of
    :data:`HUB_BENCHMARKS` (``gpqa-diamond``), or a Hugging Face dataset (``config``, ``split`` (default ``test``) and ``dataset_options``
    such as ``data_files`` or ``cache_dir`` go to ``datasets.load_dataset``). ``fields`` maps
    :data:`FIELDS` to row keys; ``choices`` takes a list field or a list of option fields.
    ``shuffle_choices`` reorders options by a seed drawn from the problem text (for sets such as
    GPQA that list the right answer first). ``source`` names the problems' source (default: the
    shipped name, the file's stem or the dataset name); it is part of each problem's id, so attempts
    pair up only across problems loaded with the same source. Row numbers in errors are 1-based.

    >>> [p.reference_answer for p in load_benchmark("gsm8k", limit=2)]
    ['18', '3']
    """
    name = str(name_or_path)
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    if name in SHIPPED_BENCHMARKS and not Path(name).exists():
        if fields is not None or dataset_options or config is not None or source is not None:
            raise ValueError(f"{name} is shipped with its own field mapping; give a file for a mapping of yours")
        return _load_shipped(name, split, limit)
    path = Path(name)
    if path.is_file():
        if split is not None or dataset_options or config is not None:
            raise ValueError("split, config and dataset options apply to Hugging Face datasets, not to files")
        return problems_from_rows(iter_json_lines(path), source=source or path.stem, where=str(path), fields=fields,
                                  limit=limit, shuffle_choices=shuffle_choices)
    if path.suffix in (".jsonl", ".json") or path.exists():
        raise InputError(path, "no such file", usage=True)
    if name in HUB_BENCHMARKS:
        hub = HUB_BENCHMARKS[name]
        if fields is not None or config is not None:
            raise ValueError(f"{name} is {hub.dataset} with its own field mapping; give the dataset's name for yours")
        return _load_hub(hub.dataset, split or hub.split, hub.fields, limit, hub.shuffle_choices, hub.config,
                         source or name, dataset_options, known=name)
    return _load_hub(name, split, fields, limit, shuffle_choices, config, source, dataset_options)


class BenchmarkSettings(BaseModel):
    """Which problems: ``quantmedic generate``'s ``--benchmark``, ``--split`` and ``--limit``, and a study's
    ``benchmark:`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="math500, gsm8k, aime24, aime90, aime25, aime120 (shipped), gpqa-diamond (gated on "
                                  "the Hub: accept its terms and log in), a JSONL file or a Hugging Face dataset.")
    split: str | None = Field(None, description="Dataset split (Hugging Face datasets).")
    limit: int | None = Field(None, ge=1, description="Only the first N problems.")

    def load(self) -> list[Problem]:
        return load_benchmark(self.name, split=self.split, limit=self.limit)
