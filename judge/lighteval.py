"""lighteval's *details* records as attempts (``--format lighteval``), so runs already made with lighteval can be
graded again and diagnosed.

Accepted layouts (one record per problem; a JSON array, JSONL, or the rows of a details parquet file exported as
JSON):

* **flat** — ``full_prompt``, ``generated_text`` (a string, or a list of strings: one attempt per element),
  ``gold`` (a list or a string), ``metrics`` (a dict): the layout of the shipped R1-Distill traces;
* **lighteval ≤ 0.9** ``Detail`` — ``full_prompt``, ``example`` (the query), ``predictions`` (a list of strings, or
  of one-element lists), ``gold``, ``metrics``, ``specifics``;
* **lighteval ≥ 0.10** — ``doc`` (``query``, ``choices``, ``gold_index``), ``model_response`` (``input``: the prompt
  text or chat messages, ``text``: a list of strings, ``output_tokens``), ``metric``.

The rules:

1. **Problem text.** From the prompt, the last user turn of the chat template: DeepSeek-R1's ``<｜User｜>`` …
   ``<｜Assistant｜>``, ChatML's ``<|im_start|>user`` … ``<|im_end|>``, Llama 3's ``<|start_header_id|>user
   <|end_header_id|>`` … ``<|eot_id|>`` (or, for chat messages, the last ``user`` message); a prompt with none of
   them is taken whole, less a leading ``<｜begin▁of▁sentence｜>`` / ``<s>`` / ``<|begin_of_text|>``. lighteval's
   instruction "Please reason step by step, and put your final answer within \\boxed{}." is removed from either
   end. With no prompt, the ``example`` / ``doc.query`` is used the same way.
2. **Reference.** The gold (the first of a list; ``doc.choices[gold_index]`` in the newest layout) is kept as the
   reference solution when it holds a ``\\boxed{}``, and its last ``\\boxed{}`` is the reference answer; a gold
   without one is the answer itself.
3. **Known problems.** A problem whose text (whitespace-normalised) is a shipped MATH-500 problem becomes that
   problem — its text, ``source`` ``math500``, ``source_id``, subject, level, answer and solution — so its id is the
   one quantmedic's own MATH-500 generation gives, and comparisons pair them.
4. **Thinking and solution.** Each generated text goes through
   :func:`~quantmedic.judge.step_format.split_output` with the prompt (R1's template opens ``<think>``); a
   thinking that never ended gets ``finish_reason`` ``length`` (its single step is
   :data:`~quantmedic.taxonomy.records.NO_SOLUTION`, with no answer).
5. **Labels.** lighteval's correctness goes into ``correct``, with ``grading`` ``lighteval:<metric>``: the metric
   ``extractive_match`` when present, else the first metric of the record whose value is 0 or 1. A record with
   several generated texts carries one score for the problem, not per text: its attempts get no label.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from quantmedic.taxonomy.errors import InputError, required_field
from quantmedic.taxonomy.records import Attempt, Problem, Sampling

from .answers import last_boxed
from .step_format import REASONING_INSTRUCTION, ModelOutput, split_output

LABEL_METRIC = "extractive_match"
MATH500_RESOURCE = ("quantmedic.pipelines.data", "math500/test.jsonl")
"""The shipped MATH-500 problems (a data file read as a package resource; no code of ``pipelines`` is imported)."""

_TURNS = (
    re.compile(r"<｜User｜>(.*?)(?:<｜Assistant｜>|$)", re.DOTALL),
    re.compile(r"<\|im_start\|>user\s*\n(.*?)(?:<\|im_end\|>|$)", re.DOTALL),
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>(.*?)(?:<\|eot_id\|>|$)", re.DOTALL),
)
_LEADING_TOKENS = ("<｜begin▁of▁sentence｜>", "<|begin_of_text|>", "<s>")


def is_lighteval(obj: Mapping[str, Any]) -> bool:
    """Whether a record has the keys of one of the module's layouts."""
    return ("full_prompt" in obj and any(k in obj for k in ("generated_text", "predictions", "gold", "metrics"))) \
        or ("doc" in obj and "model_response" in obj)


def normalise(text: str) -> str:
    """Whitespace collapsed: how a problem's text is matched with a known problem's.

    >>> normalise("  What is\\n $1+1$? ")
    'What is $1+1$?'
    """
    return " ".join(text.split())


def problem_text(prompt: str | list) -> str:
    """The problem a prompt asks (rule 1).

    >>> problem_text("<｜begin▁of▁sentence｜><｜User｜>2+2?\\n\\n" + REASONING_INSTRUCTION + "<｜Assistant｜><think>\\n")
    '2+2?'
    >>> problem_text("<|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\n1+1?<|im_end|>\\n<|im_start|>assistant\\n")
    '1+1?'
    >>> problem_text([{"role": "user", "content": REASONING_INSTRUCTION + " 3+3?"}])
    '3+3?'
    """
    if isinstance(prompt, list):
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        text = users[-1] if users and isinstance(users[-1], str) else ""
    else:
        text = prompt
        for turn in _TURNS:
            found = turn.findall(prompt)
            if found:
                text = found[-1]
                break
        else:
            for token in _LEADING_TOKENS:
                text = text.removeprefix(token)
    text = text.strip()
    return text.removesuffix(REASONING_INSTRUCTION).removeprefix(REASONING_INSTRUCTION).strip()


def reference_of(gold: str) -> tuple[str | None, str | None]:
    """``(answer, solution)`` of a gold (rule 2).

    >>> reference_of("So $x = \\\\boxed{3}$.")
    ('3', 'So $x = \\\\boxed{3}$.')
    >>> reference_of(" 42 ")
    ('42', None)
    """
    boxed = last_boxed(gold)
    if boxed:
        return boxed, gold
    return (gold.strip() or None), None


@lru_cache(maxsize=1)
def known_problems() -> dict[str, Problem]:
    """The shipped MATH-500 problems by normalised text, built as ``load_benchmark("math500")`` builds them."""
    package, name = MATH500_RESOURCE
    try:
        text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # an install without the shipped data
        return {}
    known = {}
    for raw in text.splitlines():
        if raw.strip():
            row = json.loads(raw)
            problem = Problem(text=row["problem"].strip(), reference_answer=row["answer"].strip() or None,
                              reference_solution=row["solution"].strip(), source="math500",
                              source_id=row["unique_id"].strip(), subject=row["subject"].strip(), level=row["level"])
            known[normalise(problem.text)] = problem
    return known


def _texts(value: Any, name: str, path: Path, line: int) -> list[str]:
    """The generated texts: a string, a list of strings, or a list of one-string lists."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if items is None or not items:
        raise InputError(path, "expected text or a non-empty list of texts", line=line, field=name)
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, list) and len(item) == 1:
            item = item[0]
        if not isinstance(item, str):
            raise InputError(path, f"expected text, got {type(item).__name__}", line=line, field=f"{name}.{i}")
        texts.append(item)
    return texts


def _gold(value: Any, name: str, path: Path, line: int) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise InputError(path, f"expected text or a list of texts, got {type(value).__name__}", line=line, field=name)
    return str(value)


def _flat(obj: Mapping[str, Any], path: Path, line: int) -> tuple[str | list, list[str], str | None, dict,
                                                                  list[int | None]]:
    key = "generated_text" if "generated_text" in obj or "predictions" not in obj else "predictions"
    if key not in obj:
        raise InputError(path, "missing", line=line, field="generated_text")
    prompt = obj.get("full_prompt") or obj.get("example") or ""
    if not isinstance(prompt, str):
        raise InputError(path, f"expected text, got {type(prompt).__name__}", line=line, field="full_prompt")
    metrics = obj.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise InputError(path, f"expected an object, got {type(metrics).__name__}", line=line, field="metrics")
    texts = _texts(obj[key], key, path, line)
    return prompt, texts, _gold(obj.get("gold"), "gold", path, line), metrics, [None] * len(texts)


def _nested(obj: Mapping[str, Any], path: Path, line: int) -> tuple[str | list, list[str], str | None, dict,
                                                                    list[int | None]]:
    doc = required_field(obj, "doc", dict, path, line)
    response = required_field(obj, "model_response", dict, path, line)
    text = required_field(response, "text", (str, list), path, line, "model_response")
    texts = _texts(text, "model_response.text", path, line)
    prompt = response.get("input") or doc.get("query") or ""
    choices, index = doc.get("choices") or [], doc.get("gold_index")
    index = index[0] if isinstance(index, list) and index else index
    gold = choices[index] if isinstance(index, int) and 0 <= index < len(choices) else None
    tokens = response.get("output_tokens") or []
    counts = [len(t) if isinstance(t, list) else None for t in tokens][:len(texts)]
    metrics = obj.get("metric") or obj.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise InputError(path, f"expected an object, got {type(metrics).__name__}", line=line, field="metric")
    return prompt, texts, _gold(gold, "doc.choices", path, line), metrics, counts + [None] * (len(texts) - len(counts))


def label_of(metrics: Mapping[str, Any]) -> tuple[bool | None, str | None]:
    """lighteval's correctness and the metric it came from (rule 5).

    >>> label_of({"extractive_match": 1.0}), label_of({"length": 812, "pass@1": 0.0}), label_of({"f1": 0.4})
    ((True, 'lighteval:extractive_match'), (False, 'lighteval:pass@1'), (None, None))
    """
    names = [LABEL_METRIC] if LABEL_METRIC in metrics else list(metrics)
    for name in names:
        value = metrics[name]
        if isinstance(value, (bool, int, float)) and value in (0, 1):
            return bool(value), f"lighteval:{name}"
    return None, None


def _problem(prompt: str | list, gold: str | None, path: Path, line: int) -> Problem:
    text = problem_text(prompt)
    if not text:
        raise InputError(path, "no problem text in the prompt", line=line, field="full_prompt")
    known = known_problems().get(normalise(text))
    if known is not None:
        return known
    answer, solution = reference_of(gold) if gold is not None else (None, None)
    return Problem(text=text, reference_answer=answer, reference_solution=solution, source=path.stem)


def lighteval_attempts(obj: Mapping[str, Any], path: Path, line: int) -> list[Attempt]:
    """The attempts of one details record, by the module's rules."""
    nested = "doc" in obj and "model_response" in obj
    prompt, texts, gold, metrics, counts = (_nested if nested else _flat)(obj, path, line)
    problem = _problem(prompt, gold, path, line)
    correct, grading = label_of(metrics) if len(texts) == 1 else (None, None)
    prompt_text = prompt if isinstance(prompt, str) else None
    attempts = []
    for index, (text, tokens) in enumerate(zip(texts, counts)):
        thinking, steps, answer = split_output(ModelOutput(text, prompt=prompt_text))
        finish = "length" if thinking is not None and not thinking.closed else None
        attempts.append(Attempt(problem=problem, steps=tuple(steps), final_answer=answer, thinking=thinking,
                                correct=correct, grading=grading, finish_reason=finish, completion_tokens=tokens,
                                sampling=Sampling(sample_index=index), source=str(path)))
    return attempts
