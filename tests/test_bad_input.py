"""The bad-input corpus: what a new user gets wrong, across every command and the study config, each
answered by one clean line.

Each :class:`Case` is a command line, the files it finds (relative path → bytes; a path ending in
``/`` is an empty folder), the exit code it must give (2: a usage error — an option or argument
that is wrong, a path that does not exist or is the wrong kind, an output no option can take; 1: a
data error — what a file holds, a missing extra, an endpoint or server that refuses or cannot be
reached) and a piece of the one ``error:`` line it must print (the file, the line and the field
where there is one). ``usage`` cases are typer's usage errors (exit 2; a box by design). ``hide`` names modules to pretend are not installed (the missing-extra hints).

Every case must give its exit code and message, print no traceback, create no file or folder, and
leave every file that was there byte-identical, with its mode. They run in this process through the
console script's own ``main()`` (a few milliseconds each; nothing heavy is loaded before bad input
is refused), and a sample of them also as real subprocesses on a 40-column stderr.

Run: ``.venv/bin/python -m pytest -q tests/test_bad_input.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import stat
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from quantmedic.pipelines.cli import main

# --- records and files the cases are made of ---

ATTEMPT = {"problem": {"text": "What is 1+1?", "reference_answer": "2"}, "steps": ["1+1=3", "so \\boxed{3}"],
           "correct": False, "model": "m"}
OTHER = {"problem": {"text": "What is 2+2?", "reference_answer": "4"}, "steps": ["2+2=5", "so \\boxed{5}"],
         "correct": False, "model": "m"}
GRADED = {**ATTEMPT, "final_answer": "3", "grading": "math-verify"}
GRADED_RIGHT = {**OTHER, "steps": ["2+2=4", "so \\boxed{4}"], "correct": True, "final_answer": "4",
                "grading": "math-verify"}
VERDICT = {"attempt": ATTEMPT, "status": "ok", "first_wrong_step": 0, "category": "execution",
           "subtype": "computational_error", "explanation": "1+1 is 2", "confidence": 0.9, "judge_model": "j",
           "taxonomy": "quantmedic-default@1"}
UNSCORED = {"attempt": ATTEMPT, "status": "unscored", "reason": "invalid: x", "judge_model": "j",
            "taxonomy": "quantmedic-default@1"}
REVIEW = {"verdict_id": "v1", "annotator": "ann", "judge_correct": True, "first_wrong_step": 0,
          "category": "execution", "subtype": "computational_error",
          "judge": {"model": "j", "first_wrong_step": 0, "category": "execution"}}
PB = {"problem": "What is 1+1?", "steps": ["1+1=3", "so 3"], "label": 0, "final_answer_correct": False}

TAXONOMY = """name: mine
categories:
  - id: slips
    name: Slips
    definition: A slip.
    example: 1+1=3.
    subtypes:
      - {id: arithmetic, name: Arithmetic, definition: A sum, example: 2+2=5}
"""
SECOND_CATEGORY = """  - id: {cat}
    name: Other
    definition: Another.
    example: x.
    subtypes:
      - {{id: {sub}, name: Sub, definition: A sub, example: y}}
"""
STUDY = """name: s
model: {path: model}
quantizations:
  - {method: gptq, bits: 4}
benchmark: {name: gsm8k, limit: 2}
"""
LATIN1 = b'{"problem": "caf\xe9", "solution": "1+1=3"}\n'  # an é in latin-1
MODEL = {"model/config.json": b"{}\n"}
ENDPOINT = ("--base-url", "http://127.0.0.1:9/v1", "-m", "judge")


def jl(*records: dict) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def taxonomy_with(cat: str, sub: str) -> bytes:
    return (TAXONOMY + SECOND_CATEGORY.format(cat=cat, sub=sub)).encode()


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    files: dict[str, bytes]
    code: int
    says: str
    usage: bool = False
    hide: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def case(id: str, args: str | tuple, files: dict | None = None, says: str = "", code: int = 2, **options) -> Case:
    return Case(id, tuple(args.split()) if isinstance(args, str) else tuple(args), files or {}, code, says, **options)


def usage(id: str, args: str | tuple, files: dict | None = None, says: str = "", **options) -> Case:
    return case(id, args, files, says, usage=True, **options)


IN = {"in.jsonl": jl(ATTEMPT)}
JUDGE = ("judge", "in.jsonl", "--out", "v.jsonl", *ENDPOINT)

JUDGE_CASES = [
    case("judge-latin1", JUDGE, {"in.jsonl": LATIN1}, "in.jsonl:1: not UTF-8 text (byte 0xe9", code=1),
    case("judge-latin1-line-3", JUDGE, {"in.jsonl": jl(ATTEMPT, OTHER) + LATIN1}, "in.jsonl:3: not UTF-8", code=1),
    case("judge-binary", JUDGE, {"in.jsonl": b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00"}, "in.jsonl:1: not UTF-8", code=1),
    case("judge-utf16", JUDGE, {"in.jsonl": json.dumps(PB).encode("utf-16")}, "in.jsonl:1: not UTF-8", code=1),
    case("judge-unknown-format", (*JUDGE, "--format", "bogus"), IN, "unknown format 'bogus'"),
    case("judge-input-folder", ("judge", "d", "--out", "v.jsonl", *ENDPOINT), {"d/": b""}, "d: is a folder"),
    case("judge-input-missing", ("judge", "nope.jsonl", "--out", "v.jsonl", *ENDPOINT), {}, "nope.jsonl: no such file"),
    case("judge-empty-file", JUDGE, {"in.jsonl": b""}, "in.jsonl: no records", code=1),
    case("judge-blank-lines", JUDGE, {"in.jsonl": b"\n  \n\n"}, "in.jsonl: no records", code=1),
    case("judge-bad-json", JUDGE, {"in.jsonl": jl(ATTEMPT) + b'{"problem": \n'}, "in.jsonl:2: not valid JSON", code=1),
    case("judge-string-line", JUDGE, {"in.jsonl": b'"just text"\n'}, "in.jsonl:1: expected a JSON object, got str", code=1),
    case("judge-array-of-numbers", ("judge", "in.json", "--out", "v.jsonl", *ENDPOINT), {"in.json": b"[1, 2]"},
         "in.json:1: expected a JSON object, got int", code=1),
    case("judge-array-trailing-garbage", ("judge", "in.json", "--out", "v.jsonl", *ENDPOINT),
         {"in.json": b"[\n" + json.dumps(PB).encode() + b"\n]\ngarbage\n"}, "in.json:4: not valid JSON (data after", code=1),
    case("judge-array-second-array", ("judge", "in.json", "--out", "v.jsonl", *ENDPOINT),
         {"in.json": b"[" + json.dumps(PB).encode() + b"][]"}, "in.json:1: not valid JSON (data after", code=1),
    case("judge-array-unterminated", ("judge", "in.json", "--out", "v.jsonl", *ENDPOINT),
         {"in.json": b"[" + json.dumps(PB).encode() + b","}, "in.json:1: unterminated JSON array", code=1),
    case("judge-pb-no-steps", JUDGE, {"in.jsonl": jl({**PB, "steps": []})}, 'in.jsonl:1: field "steps": no steps', code=1),
    case("judge-pb-blank-step", JUDGE, {"in.jsonl": jl({**PB, "steps": ["a", " "]})}, 'in.jsonl:1: field "steps.1"', code=1),
    case("judge-pb-label-out-of-range", JUDGE, {"in.jsonl": jl({**PB, "label": 5})}, 'in.jsonl:1: field "label"', code=1),
    case("judge-pb-bad-bool", JUDGE, {"in.jsonl": jl({**PB, "final_answer_correct": "maybe"})},
         'field "final_answer_correct"', code=1),
    case("judge-text-no-solution", JUDGE, {"in.jsonl": jl({"problem": "p"})}, 'in.jsonl:1: field "solution": missing', code=1),
    case("judge-text-solution-number", JUDGE, {"in.jsonl": jl({"problem": "p", "solution": 5})},
         'field "solution": expected str', code=1),
    case("judge-text-blank-solution", JUDGE, {"in.jsonl": jl({"problem": "p", "solution": "  "})},
         'field "solution": empty solution', code=1),
    case("judge-attempt-blank-step", JUDGE, {"in.jsonl": jl({**ATTEMPT, "steps": ["a", ""]})}, 'field "steps"', code=1),
    case("judge-attempt-bad-correct", JUDGE, {"in.jsonl": jl({**ATTEMPT, "correct": "often"})}, 'field "correct"', code=1),
    case("judge-gsm8k-entry-not-object", JUDGE,
         {"in.jsonl": jl({"question": "q", "ground_truth": "#### 2", "6b_finetuning": "x"})}, 'field "6b_finetuning"', code=1),
    case("judge-gsm8k-no-truth", JUDGE, {"in.jsonl": jl({"question": "q", "6b_finetuning": {"solution": "a"}})},
         'field "ground_truth": missing', code=1),
    case("judge-second-line-other-format", JUDGE, {"in.jsonl": jl({"problem": "p", "solution": "a"}, PB)},
         'in.jsonl:2: field "solution": missing', code=1),
    case("judge-same-id-different-attempts", JUDGE, {"in.jsonl": jl({**ATTEMPT, "id": "a1"}, {**OTHER, "id": "a1"})},
         "in.jsonl:2: field \"id\": attempt 'a1' is also line 1's", code=1),
    case("judge-same-attempt-different-grade", JUDGE, {"in.jsonl": jl(ATTEMPT, {**ATTEMPT, "correct": True})},
         "is also line 1's, with a different correct", code=1),
    case("judge-out-is-input", ("judge", "in.jsonl", "--out", "in.jsonl", *ENDPOINT), IN,
         'in.jsonl: field "--out": is also an input'),
    case("judge-out-folder", ("judge", "in.jsonl", "--out", "d", *ENDPOINT), {**IN, "d/": b""}, "d: field \"--out\": is a folder"),
    case("judge-out-not-verdicts", JUDGE, {**IN, "v.jsonl": jl(ATTEMPT)}, "v.jsonl: exists and is not a verdicts file", code=1),
    case("judge-out-latin1", JUDGE, {**IN, "v.jsonl": LATIN1}, "v.jsonl:1: not UTF-8", code=1),
    case("judge-out-under-a-file", ("judge", "in.jsonl", "--out", "f/v.jsonl", *ENDPOINT), {**IN, "f": b"x"},
         "f/v.jsonl: field \"--out\": cannot be created"),
    case("judge-cache-folder", (*JUDGE, "--cache", "c"), {**IN, "c/": b""}, "c: is a folder, not a file"),
    case("judge-cache-not-sqlite", (*JUDGE, "--cache", "c.sqlite"), {**IN, "c.sqlite": b"not a database\n" * 8},
         "c.sqlite: is not an SQLite file", code=1),
    case("judge-cache-under-a-file", (*JUDGE, "--cache", "f/c.sqlite"), {**IN, "f": b"x"}, "f/c.sqlite: cannot be created"),
    case("judge-cache-dir-env-is-a-file", JUDGE, {**IN, "f": b"x"}, "f/judge-responses.sqlite: cannot be created",
         env={"QUANTMEDIC_CACHE_DIR": "f"}),
    case("judge-taxonomy-missing", (*JUDGE, "--taxonomy", "t.yaml"), IN, "t.yaml: no such taxonomy file"),
    case("judge-lighteval-no-generated-text", ("judge", "l.json", "--out", "v.jsonl", *ENDPOINT),
         {"l.json": json.dumps([{"full_prompt": "<｜User｜>1+1?<｜Assistant｜><think>\n", "gold": ["2"],
                                 "metrics": {"extractive_match": 1.0}}]).encode()},
         'l.json:1: field "generated_text": missing', code=1),
    case("judge-scope-unknown", (*JUDGE, "--scope", "everything"), IN, "invalid value for --scope"),
    usage("judge-context-too-small", (*JUDGE, "--scope", "thinking", "--context-tokens", "10"), IN,
          "--context-tokens"),
    case("judge-taxonomy-latin1", (*JUDGE, "--taxonomy", "t.yaml"), {**IN, "t.yaml": b"name: caf\xe9\n"},
         "t.yaml:1: not UTF-8", code=1),
    case("judge-taxonomy-duplicate-id", (*JUDGE, "--taxonomy", "t.yaml"),
         {**IN, "t.yaml": taxonomy_with("slips", "other")}, 't.yaml:9: field "categories.1.id": id "slips" is used twice', code=1),
    case("judge-prompt-missing", (*JUDGE, "--prompt", "p.txt"), IN, "p.txt: cannot read prompt"),
    case("judge-prompt-no-placeholders", (*JUDGE, "--prompt", "p.txt"), {**IN, "p.txt": b"Judge it.\n"},
         "p.txt: the prompt template lacks {taxonomy} and {schema}", code=1),
    case("judge-endpoint-unreachable", JUDGE, IN, "127.0.0.1:9", code=1),
    usage("judge-no-out", ("judge", "in.jsonl", *ENDPOINT), IN, "--out"),
    usage("judge-limit-zero", (*JUDGE, "--limit", "0"), IN, "--limit"),
    usage("judge-model-without-url", ("judge", "in.jsonl", "--out", "v.jsonl", "-m", "j"), IN, "--base-url"),
    usage("judge-url-without-model", ("judge", "in.jsonl", "--out", "v.jsonl", "--base-url", "http://127.0.0.1:9/v1"),
          IN, "--model"),
    usage("judge-url-not-http", ("judge", "in.jsonl", "--out", "v.jsonl", "--base-url", "ftp://x", "-m", "j"), IN,
          "--base-url"),
    usage("judge-samples-zero", (*JUDGE, "--samples", "0"), IN, "--samples"),
    usage("judge-transport-unknown", (*JUDGE, "--transport", "pigeon"), IN, "--transport"),
    usage("judge-concurrency-zero", (*JUDGE, "--concurrency", "0"), IN, "--concurrency"),
    usage("judge-temperature-negative", (*JUDGE, "--temperature", "-1"), IN, "--temperature"),
]

EVAL = ("judge-eval", "pb.jsonl", "--out", "o", *ENDPOINT)
PB_IN = {"pb.jsonl": jl(PB)}
JUDGE_EVAL_CASES = [
    case("eval-out-is-a-file", EVAL, {**PB_IN, "o": b"x"}, 'o: field "--out": is a file'),
    case("eval-out-metrics-is-a-folder", EVAL, {**PB_IN, "o/metrics.json/": b""},
         'o/metrics.json: field "--out": is a folder where'),
    case("eval-out-predictions-is-the-input", ("judge-eval", "o/predictions.jsonl", "--out", "o", *ENDPOINT),
         {"o/predictions.jsonl": jl(PB)}, "is also an input"),
    case("eval-no-label", EVAL, {"pb.jsonl": jl({**PB, "label": None})}, 'pb.jsonl: field "label"', code=1),
    case("eval-latin1", EVAL, {"pb.jsonl": LATIN1}, "pb.jsonl:1: not UTF-8", code=1),
    case("eval-missing", EVAL, {}, "pb.jsonl: no such file"),
    case("eval-escalate-one-judge", (*EVAL, "--escalate-below", "0.5"), PB_IN, "--escalate-below: needs at least two"),
    case("eval-unknown-format", (*EVAL, "--format", "csv"), PB_IN, "unknown format 'csv'"),
    case("eval-cache-folder", (*EVAL, "--cache", "c"), {**PB_IN, "c/": b""}, "c: is a folder"),
    case("eval-array-trailing", ("judge-eval", "pb.json", "--out", "o", *ENDPOINT),
         {"pb.json": b"[" + json.dumps(PB).encode() + b"]}"}, "pb.json:1: not valid JSON (data after", code=1),
    case("eval-same-item-two-labels", EVAL, {"pb.jsonl": jl(PB, {**PB, "label": 1})}, "with a different label", code=1),
    usage("eval-escalate-out-of-range", (*EVAL, "--escalate-below", "2"), PB_IN, "--escalate-below"),
    usage("eval-bootstrap-too-few", (*EVAL, "--bootstrap", "5"), PB_IN, "--bootstrap"),
    usage("eval-no-out", ("judge-eval", "pb.jsonl", *ENDPOINT), PB_IN, "--out"),
]

V_IN = {"v.jsonl": jl(VERDICT)}
ARGILLA = ("--api-url", "http://127.0.0.1:9", "--api-key", "k")
ANNOTATE_CASES = [
    case("push-without-extra", "annotate push v.jsonl --dataset d", V_IN, 'pip install "quantmedic[annotate]"',
         hide=("argilla",), code=1),
    case("push-latin1", "annotate push v.jsonl --dataset d", {"v.jsonl": LATIN1}, "v.jsonl:1: not UTF-8", code=1),
    case("push-missing", "annotate push v.jsonl --dataset d", {}, "v.jsonl: no such file"),
    case("push-attempts-not-verdicts", "annotate push v.jsonl --dataset d", {"v.jsonl": jl(ATTEMPT)},
         'v.jsonl:1: field "attempt"', code=1),
    case("push-no-server", "annotate push v.jsonl --dataset d", V_IN, "no Argilla server", code=1),
    case("push-no-key", "annotate push v.jsonl --dataset d --api-url http://127.0.0.1:9", V_IN, "no Argilla API key", code=1),
    case("push-taxonomy-duplicate-subtype", "annotate push v.jsonl --dataset d --taxonomy t.yaml",
         {**V_IN, "t.yaml": taxonomy_with("other", "arithmetic")}, 'field "categories.1.subtypes.0.id"', code=1),
    usage("push-overlap-zero", "annotate push v.jsonl --dataset d --overlap 0", V_IN, "--overlap"),
    usage("push-stratify-unknown", "annotate push v.jsonl --dataset d --stratify colour", V_IN, "--stratify"),
    usage("push-no-dataset", "annotate push v.jsonl", V_IN, "--dataset"),
    case("pull-without-extra", ("annotate", "pull", "-d", "d", "--verdicts", "v.jsonl", "--out", "r.jsonl", *ARGILLA),
         V_IN, 'pip install "quantmedic[annotate]"', hide=("argilla",), code=1),
    case("pull-out-is-the-verdicts", ("annotate", "pull", "-d", "d", "--verdicts", "v.jsonl", "--out", "v.jsonl",
                                      *ARGILLA), V_IN, 'v.jsonl: field "--out": is also an input'),
    case("pull-out-folder", ("annotate", "pull", "-d", "d", "--verdicts", "v.jsonl", "--out", "r", *ARGILLA),
         {**V_IN, "r/": b""}, 'r: field "--out": is a folder'),
    case("pull-out-under-a-file", ("annotate", "pull", "-d", "d", "--verdicts", "v.jsonl", "--out", "f/r.jsonl",
                                   *ARGILLA), {**V_IN, "f": b""}, "cannot be created"),
    case("pull-verdicts-latin1", ("annotate", "pull", "-d", "d", "--verdicts", "v.jsonl", "--out", "r.jsonl", *ARGILLA),
         {"v.jsonl": LATIN1}, "v.jsonl:1: not UTF-8", code=1),
    case("pull-verdicts-missing", ("annotate", "pull", "-d", "d", "--verdicts", "v.jsonl", "--out", "r.jsonl",
                                   *ARGILLA), {}, "v.jsonl: no such file"),
    case("pull-no-key", "annotate pull -d d --verdicts v.jsonl --out r.jsonl --api-url http://127.0.0.1:9", V_IN,
         "no Argilla API key", code=1),
    case("report-latin1", "annotate report r.jsonl --out o", {"r.jsonl": LATIN1}, "r.jsonl:1: not UTF-8", code=1),
    case("report-missing", "annotate report r.jsonl --out o", {}, "r.jsonl: no such file"),
    case("report-empty", "annotate report r.jsonl --out o", {"r.jsonl": b""}, "r.jsonl: no reviews", code=1),
    case("report-verdicts-not-reviews", "annotate report r.jsonl --out o", {"r.jsonl": jl(VERDICT)},
         'r.jsonl:1: field "verdict_id"', code=1),
    case("report-zero-weight", "annotate report r.jsonl --out o", {"r.jsonl": jl({**REVIEW, "sampling_weight": 0})},
         'r.jsonl:1: field "sampling_weight"', code=1),
    case("annotate-report-out-is-a-file", "annotate report r.jsonl --out o", {"r.jsonl": jl(REVIEW), "o": b""},
         'o: field "--out": is a file'),
    case("report-out-holds-a-folder-named-report-json", "annotate report r.jsonl --out o",
         {"r.jsonl": jl(REVIEW), "o/report.json/": b""}, "o/report.json: field \"--out\": is a folder where"),
    case("serve-home-is-a-file", "annotate serve --home h", {"h": b""}, 'h: field "--home": is a file'),
    case("serve-python-missing", "annotate serve --home h --python nope/bin/python", {},
         'nope/bin/python: field "--python": no such file'),
    usage("serve-port-zero", "annotate serve --home h --port 0", {}, "--port"),
    usage("serve-annotators-negative", "annotate serve --home h --annotators -1", {}, "--annotators"),
]

MODEL_CASES = [
    case("quantize-model-missing", "quantize ./nope --out q", {}, "./nope: field \"MODEL\": no such model folder"),
    case("quantize-model-mistyped-local-path", "quantize models/llama --out q", {"models/": b""}, "no such model folder"),
    case("quantize-model-is-a-file", "quantize m.bin --out q", {"m.bin": b"x"}, "m.bin: field \"MODEL\": is a file"),
    case("quantize-no-config", "quantize model --out q", {"model/weights.bin": b"x"}, "model: field \"MODEL\": not a "
         "model folder (no config.json)"),
    case("quantize-config-not-json", "quantize model --out q", {"model/config.json": b"{\n  oops\n"},
         "model/config.json:2: not valid JSON", code=1),
    case("quantize-record-invalid", "quantize model --out q",
         {**MODEL, "model/quantmedic-quantization.json": b'{"bits": 4}'},
         'model/quantmedic-quantization.json: field "method"', code=1),
    case("quantize-out-is-a-file", "quantize model --out q", {**MODEL, "q": b""}, 'q: field "--out": is a file'),
    case("quantize-out-is-the-model", "quantize model --out model", MODEL, 'model: field "--out": is also an input'),
    case("quantize-calibration-missing", "quantize model --out q --calibration ./cal.jsonl", MODEL,
         "cal.jsonl: no such file"),
    case("quantize-calibration-latin1", "quantize model --out q --calibration cal.jsonl", {**MODEL, "cal.jsonl": LATIN1},
         "cal.jsonl:1: not UTF-8", code=1),
    usage("quantize-method-unknown", "quantize model --out q --method magic", MODEL, "--method"),
    usage("quantize-awq-3-bit-gptqmodel", "quantize model --out q --method awq --bits 3 --tool gptqmodel", MODEL,
          "GPTQModel's AWQ checkpoints are 4-bit"),
    usage("quantize-nvfp4-8-bit", "quantize model --out q --method nvfp4 --bits 8", MODEL, "use --bits 4"),
    usage("quantize-samples-zero", "quantize model --out q --num-samples 0", MODEL, "--num-samples"),
    case("generate-benchmark-latin1", "generate model --benchmark b.jsonl --out a.jsonl", {**MODEL, "b.jsonl": LATIN1},
         "b.jsonl:1: not UTF-8", code=1),
    case("generate-benchmark-missing", "generate model --benchmark ./b.jsonl --out a.jsonl", MODEL,
         "b.jsonl: no such file"),
    case("generate-benchmark-no-problem-field", "generate model --benchmark b.jsonl --out a.jsonl",
         {**MODEL, "b.jsonl": jl({"question": "q", "answer": "1"}, {"answer": "2"})}, "b.jsonl:2", code=1),
    case("generate-out-folder", "generate model --benchmark gsm8k --out d", {**MODEL, "d/": b""},
         'd: field "--out": is a folder'),
    case("generate-out-is-the-benchmark", "generate model --benchmark b.jsonl --out b.jsonl",
         {**MODEL, "b.jsonl": jl({"problem": "p", "answer": "1"})}, 'b.jsonl: field "--out": is also an input'),
    case("generate-model-missing", "generate ./nope --benchmark gsm8k --out a.jsonl", {}, "no such model folder"),
    case("generate-model-config-broken", "generate model --benchmark gsm8k --out a.jsonl", {"model/config.json": b"["},
         "model/config.json:1: not valid JSON", code=1),
    case("generate-out-holds-another-model", ("generate", "m", "--benchmark", "gsm8k", "--limit", "1", "--out",
                                              "a.jsonl", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"),
         {"a.jsonl": jl(ATTEMPT | {"model": "other"})}, "a.jsonl:1: holds attempts of model 'other'", code=1),
    case("generate-adapter-not-an-adapter", "generate model --benchmark gsm8k --out a.jsonl --adapter ad",
         {**MODEL, "ad/": b""}, 'ad: field "--adapter": not an adapter folder'),
    usage("generate-n-zero", "generate model --benchmark gsm8k --out a.jsonl --n 0", MODEL, "--n"),
    usage("generate-openai-without-url", "generate m --benchmark gsm8k --limit 1 --out a.jsonl --backend openai", {},
          "--base-url"),
    usage("generate-limit-zero", "generate model --benchmark gsm8k --out a.jsonl --limit 0", MODEL, "--limit"),
]

A_IN = {"a.jsonl": jl(ATTEMPT)}
EVALUATION_CASES = [
    case("grade-out-is-the-input", "grade a.jsonl --out a.jsonl", A_IN, 'a.jsonl: field "--out": is also an input'),
    case("grade-latin1", "grade a.jsonl --out g.jsonl", {"a.jsonl": LATIN1}, "a.jsonl:1: not UTF-8", code=1),
    case("grade-unknown-format", "grade a.jsonl --out g.jsonl --format xml", A_IN, "unknown format 'xml'"),
    case("grade-out-folder", "grade a.jsonl --out d", {**A_IN, "d/": b""}, 'd: field "--out": is a folder'),
    case("grade-input-folder", "grade d --out g.jsonl", {"d/": b""}, "d: is a folder"),
    case("grade-out-not-attempts", "grade a.jsonl --out g.jsonl", {**A_IN, "g.jsonl": jl(REVIEW)},
         'g.jsonl:1: field "problem": exists and is not a graded-attempts file', code=1),
    case("grade-out-from-another-input", "grade a.jsonl --out g.jsonl", {**A_IN, "g.jsonl": jl(GRADED_RIGHT)},
         "g.jsonl:1: holds 1 attempts that are not in the input", code=1),
    case("grade-out-latin1", "grade a.jsonl --out g.jsonl", {**A_IN, "g.jsonl": LATIN1},
         "g.jsonl:1: exists and is not a graded-attempts file (not UTF-8", code=1),
    case("grade-same-id-different-attempts", "grade a.jsonl --out g.jsonl",
         {"a.jsonl": jl({**ATTEMPT, "id": "x"}, {**OTHER, "id": "x"})}, "a.jsonl:2: field \"id\"", code=1),
    usage("grade-workers-zero", "grade a.jsonl --out g.jsonl --workers 0", A_IN, "--workers"),
    usage("grade-timeout-zero", "grade a.jsonl --out g.jsonl --timeout 0", A_IN, "--timeout"),
    usage("grade-no-out", "grade a.jsonl", A_IN, "--out"),
    usage("grade-nothing", "grade", {}, "ATTEMPTS"),
    case("compare-ungraded", "compare fp.jsonl q.jsonl --out c", {"fp.jsonl": jl({**ATTEMPT, "correct": None}),
                                                                  "q.jsonl": jl(GRADED)}, 'fp.jsonl: field "correct"', code=1),
    case("compare-latin1", "compare fp.jsonl q.jsonl --out c", {"fp.jsonl": LATIN1, "q.jsonl": jl(GRADED)},
         "fp.jsonl:1: not UTF-8", code=1),
    case("compare-missing", "compare fp.jsonl q.jsonl --out c", {"q.jsonl": jl(GRADED)}, "fp.jsonl: no such file"),
    case("compare-out-is-a-file", "compare fp.jsonl q.jsonl --out c",
         {"fp.jsonl": jl(GRADED), "q.jsonl": jl(GRADED), "c": b""}, 'c: field "--out": is a file'),
    case("compare-out-json-is-a-folder", "compare fp.jsonl q.jsonl --out c",
         {"fp.jsonl": jl(GRADED), "q.jsonl": jl(GRADED), "c/comparison.json/": b""}, "c/comparison.json: field"),
    case("compare-would-overwrite-its-input", "compare fp.jsonl c/failures.jsonl --out c",
         {"fp.jsonl": jl(GRADED), "c/failures.jsonl": jl(GRADED)}, "c/failures.jsonl: field \"--out\": is also an input"),
    case("compare-two-attempts-one-sample", "compare fp.jsonl q.jsonl --out c",
         {"fp.jsonl": jl(GRADED, {**GRADED, "steps": ["1+1=4", "so \\boxed{4}"]}), "q.jsonl": jl(GRADED)},
         'fp.jsonl: field "sampling": two attempts', code=1),
    case("compare-nothing-pairs-up", "compare fp.jsonl q.jsonl --out c", {"fp.jsonl": jl(GRADED),
                                                                         "q.jsonl": jl(GRADED_RIGHT)}, "q.jsonl:", code=1),
    case("evaluate-missing", "evaluate --full f.jsonl --before b.jsonl --after a.jsonl --out o", {},
         "f.jsonl: no such file"),
    case("evaluate-medicine-not-a-medicine", "evaluate --full f.jsonl --before f.jsonl --after f.jsonl --out o "
         "--medicine m", {"f.jsonl": jl(GRADED), "m/": b""}, "m: is not a medicine folder"),
    case("evaluate-medicine-json-broken", "evaluate --full f.jsonl --before f.jsonl --after f.jsonl --out o "
         "--medicine m", {"f.jsonl": jl(GRADED), "m/medicine.json": b"{\n"}, "m/medicine.json:2: not valid JSON", code=1),
    case("evaluate-verdicts-latin1", "evaluate --full f.jsonl --before f.jsonl --after f.jsonl --out o "
         "--verdicts-before v.jsonl", {"f.jsonl": jl(GRADED), "v.jsonl": LATIN1}, "v.jsonl:1: not UTF-8", code=1),
    case("evaluate-out-is-a-file", "evaluate --full f.jsonl --before f.jsonl --after f.jsonl --out o",
         {"f.jsonl": jl(GRADED), "o": b""}, 'o: field "--out": is a file'),
    case("evaluate-nothing-in-common", "evaluate --full f.jsonl --before f.jsonl --after a.jsonl --out o",
         {"f.jsonl": jl(GRADED), "a.jsonl": jl(GRADED_RIGHT)}, "a.jsonl: no problem is present", code=1),
    usage("evaluate-resamples-too-few", "evaluate --full f.jsonl --before f.jsonl --after f.jsonl --out o "
          "--resamples 5", {"f.jsonl": jl(GRADED)}, "--resamples"),
]

BUILD = "medicine build -v v.jsonl -a a.jsonl --out med"
BUILD_IN = {"v.jsonl": jl(VERDICT), "a.jsonl": jl(GRADED_RIGHT)}
VERDICTS_ONLY = {"v.jsonl": jl(VERDICT)}
CONTINUE = "medicine continue model -v v.jsonl --out c.jsonl"
TRAIN = "train dpo model --data med --out ad"
MEDICINE = {"med/medicine.json": b'{"problem_keys": []}'}
TREATMENT_CASES = [
    case("build-without-extra", BUILD, BUILD_IN, 'pip install "quantmedic[hf]"', hide=("datasets",), code=1),
    case("build-verdicts-latin1", BUILD, {**BUILD_IN, "v.jsonl": LATIN1}, "v.jsonl:1: not UTF-8", code=1),
    case("build-attempts-missing", BUILD, VERDICTS_ONLY, "a.jsonl: no such file"),
    case("build-reviews-not-reviews", f"{BUILD} -r r.jsonl", {**BUILD_IN, "r.jsonl": jl(ATTEMPT)},
         'r.jsonl:1: field "verdict_id"', code=1),
    case("build-out-is-a-file", BUILD, {**BUILD_IN, "med": b""}, 'med: field "--out": is a file'),
    case("build-out-holds-an-input", "medicine build -v med/v.jsonl -a a.jsonl --out med",
         {"med/v.jsonl": jl(VERDICT), "a.jsonl": jl(GRADED_RIGHT)}, 'med: field "--out": holds the input'),
    case("build-no-pair-possible", BUILD, {**BUILD_IN, "v.jsonl": jl(UNSCORED)}, "no preference pair could be made", code=1),
    case("build-eval-split-missing", f"{BUILD} --eval-split ./e.jsonl", BUILD_IN, "e.jsonl: no such file"),
    usage("build-strategy-unknown", f"{BUILD} --strategy random", BUILD_IN, "--strategy"),
    usage("build-chosen-unknown", f"{BUILD} --chosen oracle", BUILD_IN, "--chosen"),
    usage("build-budget-zero", f"{BUILD} --budget 0", BUILD_IN, "--budget"),
    usage("build-hub-without-token", f"{BUILD} --push-to-hub me/med", BUILD_IN, "--push-to-hub"),
    case("continue-without-extra", CONTINUE, {**MODEL, **VERDICTS_ONLY}, 'pip install "quantmedic[quantize]"',
         hide=("torch",), code=1),
    case("continue-out-exists", CONTINUE, {**MODEL, **VERDICTS_ONLY, "c.jsonl": b""}, 'c.jsonl: field "--out": exists'),
    case("continue-out-is-the-verdicts", "medicine continue model -v v.jsonl --out v.jsonl", {**MODEL, **VERDICTS_ONLY},
         'v.jsonl: field "--out": is also an input'),
    case("continue-verdicts-latin1", CONTINUE, {**MODEL, "v.jsonl": LATIN1}, "v.jsonl:1: not UTF-8", code=1),
    case("continue-nothing-to-continue", CONTINUE, {**MODEL, "v.jsonl": jl(UNSCORED)}, "no usable diagnosis", code=1),
    case("continue-model-missing", "medicine continue ./nope -v v.jsonl --out c.jsonl", VERDICTS_ONLY,
         "no such model folder"),
    usage("continue-n-zero", f"{CONTINUE} --n 0", {**MODEL, **VERDICTS_ONLY}, "--n"),
    case("train-without-extra", TRAIN, {**MODEL, **MEDICINE}, 'pip install "quantmedic[quantize,train]"',
         hide=("trl",), code=1),
    case("train-data-missing", "train dpo model --data ./med --out ad", MODEL, './med: field "--data": is not a folder'),
    case("train-data-is-a-file", "train dpo model --data m.json --out ad", {**MODEL, "m.json": b"{}"},
         'm.json: field "--data"'),
    case("train-out-is-a-file", TRAIN, {**MODEL, **MEDICINE, "ad": b""}, 'ad: field "--out": is a file'),
    case("train-out-is-the-data", "train dpo model --data med --out med", {**MODEL, **MEDICINE},
         'med: field "--out": is also an input'),
    case("train-model-missing", "train dpo ./nope --data med --out ad", MEDICINE, "no such model folder"),
    case("train-data-holds-no-dataset", TRAIN, {**MODEL, **MEDICINE}, 'med: field "--data": holds no dataset'),
    usage("train-lora-rank-zero", f"{TRAIN} --lora-r 0", {**MODEL, **MEDICINE}, "--lora-r"),
    usage("train-no-step", f"{TRAIN} --max-steps 0", {**MODEL, **MEDICINE}, "at least one step"),
    usage("train-beta-zero", f"{TRAIN} --beta 0", {**MODEL, **MEDICINE}, "--beta"),
]


def study(extra: str = "", base: str = STUDY) -> dict[str, bytes]:
    return {"s.yaml": (base + extra).encode(), **MODEL}


STUDY_CASES = [
    case("run-latin1", "run s.yaml --check", {"s.yaml": STUDY.encode() + b"# caf\xe9\n"}, "s.yaml:6: not UTF-8", code=1),
    case("run-missing", "run s.yaml --check", {}, "s.yaml: no such study config file"),
    case("run-folder", "run s.yaml --check", {"s.yaml/": b""}, "s.yaml: is a folder"),
    case("run-yaml-broken", "run s.yaml --check", {"s.yaml": b"name: s\nmodel: {path: m\n"}, "s.yaml:3: not valid YAML", code=1),
    case("run-not-a-mapping", "run s.yaml --check", {"s.yaml": b"- name: s\n"}, "s.yaml: must be a mapping", code=1),
    case("run-unknown-field", "run s.yaml --check", study("trainng: {}\n"), 's.yaml:6: field "trainng"', code=1),
    case("run-bad-bits", "run s.yaml --check", study(base=STUDY.replace("bits: 4", "bits: 9")),
         's.yaml:4: field "quantizations.0.bits"', code=1),
    case("run-two-identical-quantizations", "run s.yaml --check",
         study(base=STUDY.replace("  - {method: gptq, bits: 4}\n", "  - {method: gptq, bits: 4}\n" * 2)),
         "two quantizations have the same settings", code=1),
    case("run-seed-in-a-section", "run s.yaml --check", study("generation: {seed: 3}\n"), 'field "generation.seed"', code=1),
    case("run-attempts-missing", "run s.yaml --check",
         study(base=STUDY.replace("{method: gptq, bits: 4}", "{method: gptq, bits: 4, attempts: a.jsonl}")),
         "a.jsonl", code=1),
    case("run-flipped-without-full-precision", "run s.yaml --check",
         {"s.yaml": b"name: s\nmodel: {}\nquantizations:\n  - {method: gptq, bits: 4, attempts: a.jsonl}\n",
          "a.jsonl": jl(GRADED)}, "judge.failures", code=1),
    case("run-taxonomy-missing", "run s.yaml --check", study("taxonomy: t.yaml\n"),
         's.yaml:6: field "taxonomy": t.yaml: no such taxonomy file', code=1),
    case("run-taxonomy-broken", "run s.yaml --check", {**study("taxonomy: t.yaml\n"), "t.yaml": taxonomy_with("x", "x")},
         's.yaml:6: field "taxonomy": t.yaml:14: field "categories.1.subtypes.0.id"', code=1),
    case("run-taxonomy-missing-without-check", "run s.yaml", study("taxonomy: t.yaml\n"), "t.yaml: no such taxonomy", code=1),
    case("run-benchmark-missing", "run s.yaml --check",
         study(base=STUDY.replace("{name: gsm8k, limit: 2}", "{name: ./b.jsonl}")),
         's.yaml:5: field "benchmark.name": b.jsonl: no such file', code=1),
    case("run-benchmark-latin1", "run s.yaml --check",
         {**study(base=STUDY.replace("{name: gsm8k, limit: 2}", "{name: b.jsonl}")), "b.jsonl": LATIN1},
         'field "benchmark.name": b.jsonl:1: not UTF-8', code=1),
    case("run-model-missing", "run s.yaml --check", {"s.yaml": STUDY.replace("path: model", "path: ./nope").encode()},
         's.yaml:2: field "model.path": ./nope: field "MODEL": no such model folder', code=1),
    case("run-checkpoint-missing", "run s.yaml --check",
         study(base=STUDY.replace("{method: gptq, bits: 4}", "{method: gptq, bits: 4, path: ./q}")),
         'field "quantizations.0.path": ./q', code=1),
    case("run-calibration-missing", "run s.yaml --check",
         study(base=STUDY.replace("{method: gptq, bits: 4}", "{method: gptq, bits: 4, calibration: ./c.jsonl}")),
         's.yaml:4: field "quantizations.0.calibration": c.jsonl: no such file', code=1),
    case("run-prompt-missing", "run s.yaml --check", study("judge: {prompts: [p.txt]}\n"),
         's.yaml:6: field "judge.prompts.0": p.txt: cannot read prompt', code=1),
    case("run-bad-set", "run s.yaml --check --set judge", study(), 's.yaml: field "--set"'),
    case("run-out-is-a-file", "run s.yaml --check --out o", {**study(), "o": b""}, 'o: field "--out": is a file'),
    usage("run-until-unknown", "run s.yaml --until lunch", study(), "--until"),
    case("report-not-a-study", "report d", {"d/": b""}, "d: is not a study folder"),
    case("report-a-file", "report d", {"d": b""}, "d: is not a study folder"),
    case("report-state-broken", "report d", {"d/state.json": b"{\n"}, "d/state.json:2: not valid JSON", code=1),
    case("report-state-latin1", "report d", {"d/state.json": b'{"x": "\xe9"}'}, "d/state.json:1: not UTF-8", code=1),
    case("report-lock-not-an-object", "report d", {"d/state.json": b"{}", "d/study.lock": b"[1]"},
         "d/study.lock: not a JSON object", code=1),
    case("report-out-is-a-file", "report d --out r", {"d/state.json": b"{}", "r": b""}, 'r: field "--out": is a file'),
]

INFO_CASES = [
    case("taxonomy-missing", "taxonomy --check t.yaml", {}, "t.yaml: no such taxonomy file"),
    case("taxonomy-latin1", "taxonomy --check t.yaml", {"t.yaml": TAXONOMY.encode() + b"# \xe9\n"}, "t.yaml:9: not UTF-8", code=1),
    case("taxonomy-binary", "taxonomy --check t.yaml", {"t.yaml": b"\x00\x01\xff"}, "t.yaml:1: not UTF-8", code=1),
    case("taxonomy-folder", "taxonomy --check t", {"t/": b""}, "t: is a folder"),
    case("taxonomy-duplicate-category", "taxonomy --check t.yaml", {"t.yaml": taxonomy_with("slips", "b")},
         't.yaml:9: field "categories.1.id"', code=1),
    case("taxonomy-duplicate-subtype", "taxonomy --check t.yaml", {"t.yaml": taxonomy_with("b", "arithmetic")},
         't.yaml:14: field "categories.1.subtypes.0.id": id "arithmetic" is used twice', code=1),
    case("taxonomy-reserved-id", "taxonomy --check t.yaml", {"t.yaml": taxonomy_with("none", "b")},
         't.yaml:9: field "categories.1.id": id "none" is reserved', code=1),
    case("taxonomy-yaml-broken", "taxonomy --check t.yaml", {"t.yaml": b"name: [\n"}, "t.yaml:2: not valid YAML", code=1),
    case("taxonomy-not-a-mapping", "taxonomy --check t.yaml", {"t.yaml": b"- a\n"}, "t.yaml: must be a mapping", code=1),
    case("taxonomy-no-subtypes", "taxonomy --check t.yaml",
         {"t.yaml": TAXONOMY.split("    subtypes:")[0].encode() + b"    subtypes: []\n"},
         't.yaml:7: field "categories.0.subtypes"', code=1),
    case("schema-a-file", "schema f", {"f": b"x"}, 'f: field "FOLDER": is a file'),
    case("schema-under-a-file", "schema f/schemas", {"f": b"x"}, "f/schemas: field \"FOLDER\": cannot be created"),
    case("schema-name-is-a-folder", "schema s", {"s/attempt.schema.json/": b""}, "s/attempt.schema.json: field"),
    usage("data-extra-argument", "data gsm8k", {}, "extra argument"),
    usage("unknown-command", "judgement in.jsonl", {}, "No such command"),
    usage("judge-without-arguments", "judge", {}, "Missing argument"),
    case("check-input-missing", "check nope.jsonl --out f.jsonl", {}, "nope.jsonl: no such file"),
    case("check-broken-jsonl-line", "check in.jsonl --out f.jsonl", {"in.jsonl": jl(ATTEMPT) + b"{not json\n"},
         "in.jsonl:2: not valid JSON", code=1),
]

CASES = [*JUDGE_CASES, *JUDGE_EVAL_CASES, *ANNOTATE_CASES, *MODEL_CASES, *EVALUATION_CASES, *TREATMENT_CASES,
         *STUDY_CASES, *INFO_CASES]


# --- the harness ---

CLEAN_ENV = ("ARGILLA_API_URL", "ARGILLA_API_KEY", "HF_TOKEN", "QUANTMEDIC_BASE_URL", "QUANTMEDIC_GENERATE_BASE_URL",
             "QUANTMEDIC_ARGILLA_PYTHON")
SUBPROCESS_CASES = ("judge-latin1", "judge-unknown-format", "judge-cache-not-sqlite", "judge-same-id-different-attempts",
                    "eval-out-is-a-file", "push-no-server", "grade-out-is-the-input", "quantize-model-missing",
                    "run-taxonomy-missing", "taxonomy-duplicate-category", "schema-a-file", "report-state-broken")


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: folders, and files with their bytes and mode."""
    return {str(p.relative_to(root)): (None, None) if p.is_dir() else (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(root.rglob("*"))}


def make_files(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = root / relative
        if relative.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o644)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty folder to run in, with the answer cache and the locks kept outside it, and no server configured."""
    root = tmp_path / "work"
    root.mkdir()
    monkeypatch.chdir(root)
    for name in CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QUANTMEDIC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("QUANTMEDIC_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000000000")
    monkeypatch.setenv("COLUMNS", "200")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    return root


def run_main(args: tuple[str, ...]) -> tuple[int, str, str]:
    """``quantmedic ARGS`` through the console script's ``main()``: exit code, stdout, stderr. An exception that
    escapes ``main()`` is what a user would see as a traceback: it fails the test."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["quantmedic", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except BaseException:  # noqa: BLE001
        pytest.fail(f"traceback:\n{traceback.format_exc()}\nstderr:\n{err.getvalue()}")
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def check_answer(c: Case, code: int, stdout: str, stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert code == c.code, f"exit {code}, not {c.code}; stderr:\n{stderr}"
    if c.usage:
        assert c.says in " ".join(stderr.replace("│", " ").split()), stderr
        return
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one error line:\n{stderr}"
    assert c.says in lines[0], lines[0]
    assert stdout == "", stdout


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clean_line_and_changes_nothing(c: Case, workdir, monkeypatch):
    make_files(workdir, c.files)
    for name, value in c.env.items():
        monkeypatch.setenv(name, value)
    if c.hide:
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in c.hide else find_spec(name, *a))
    before = snapshot(workdir)
    check_answer(c, *run_main(c.args))
    assert snapshot(workdir) == before, "files were created, removed or changed"


def test_the_corpus_is_large_and_covers_every_command():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)
    commands = {" ".join(c.args[:2]) if c.args[0] in ("annotate", "medicine", "train") else c.args[0] for c in CASES}
    assert {"judge", "judge-eval", "annotate push", "annotate pull", "annotate report", "annotate serve", "quantize",
            "generate", "grade", "compare", "evaluate", "medicine build", "medicine continue", "train dpo", "run",
            "report", "taxonomy", "schema", "data"} <= commands


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_the_real_command_line_says_it_in_one_line_on_a_narrow_stderr(case_id: str, workdir):
    c = next(c for c in CASES if c.id == case_id)
    make_files(workdir, c.files)
    before = snapshot(workdir)
    result = subprocess.run([sys.executable, "-m", "quantmedic.pipelines.cli", *c.args], capture_output=True, text=True,
                            env={**os.environ, **c.env, "COLUMNS": "40"}, timeout=120)
    check_answer(c, result.returncode, result.stdout, result.stderr)
    assert snapshot(workdir) == before
