"""Simulated quantization: a loaded transformers model made to compute a format's numbers where no engine
here has its kernels (see :mod:`.formats`). The weights are already dequantized by the loader
(:func:`.loading.load_for_generation` with ``simulate=True``); :func:`apply` adds what the forward pass
still lacks and says what it did (recorded in the attempts' ``quantization.extra["simulation"]``).

* **Activations** (W8A8, FP8, W4A4, NVFP4, MXFP4): compressed-tensors already fake-quantizes the inputs
  of every quantized Linear of a checkpoint it loads (``set_forward_quantized``: the checkpoint's own
  ``input_activations``, dynamic per token, or per group of 16 / 32 for fp4, NVFP4 with its calibrated
  global scale), dequantized or not; :func:`apply` only checks that it is there. Where it is not (a
  record that names activation bits over a checkpoint that carries none), forward pre-hooks on every
  Linear but ``lm_head`` do the same quantize-dequantize with compressed-tensors' own helpers.
* **KV cache**: int8 / int4 / int3 are not in any checkpoint (only in its record): forward hooks on each
  attention's ``k_proj`` and ``v_proj`` outputs (pre-RoPE keys, as KVQuant) quantize-dequantize them
  asymmetrically per token and per head. fp8 without the checkpoint's own KV scales: the same outputs cast
  through ``float8_e4m3fn`` with a dynamic per-tensor scale. A checkpoint with a compressed-tensors
  ``kv_cache_scheme`` (llm-compressor's fp8 KV) is left to the library (post-RoPE, the calibrated scales).
"""

from __future__ import annotations

from typing import Any

from quantmedic.taxonomy.records import Quantization

from .formats import activation_bits

HOOKS_ATTR = "quantmedic_simulation_hooks"
"""The model attribute holding the hooks :func:`apply` registered (``remove`` each to undo it)."""


def _name(value: Any) -> str:
    return str(getattr(value, "value", value)).lower()


def describe_args(args: Any) -> str:
    """``int4 per-token dynamic``, ``fp4 per-group-16``, ...: a QuantizationArgs in a few words."""
    kind = f"{'int' if _name(args.type) == 'int' else 'fp'}{args.num_bits}"
    strategy = _name(args.strategy)
    where = f"per-group-{args.group_size}" if args.group_size else f"per-{strategy}"
    symmetry = "" if args.symmetric else " asymmetric"
    return f"{kind} {where}{symmetry}" + (" dynamic" if args.dynamic not in (False, None) else " static")


def _linears(model: Any) -> list[tuple[str, Any]]:
    import torch

    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] != "lm_head"]


def activation_args(q: Quantization) -> Any:
    """The input activations' QuantizationArgs of a format (compressed-tensors' presets)."""
    from compressed_tensors.quantization import QuantizationArgs, preset_name_to_scheme

    preset = {"nvfp4": "NVFP4", "mxfp4": "MXFP4", "fp8": "FP8_DYNAMIC"}.get(q.method)
    if preset:
        return preset_name_to_scheme(preset, ["Linear"]).input_activations
    return QuantizationArgs(num_bits=activation_bits(q), type="int", strategy="token", symmetric=True, dynamic=True)


def fake_quantize_dynamic(x: Any, args: Any) -> Any:
    """Quantize-dequantize ``x`` with scales computed from ``x`` itself (NVFP4: its global scale too)."""
    import torch
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils import compute_dynamic_scales_and_zp, generate_gparam

    if x.numel() == 0:
        return x
    global_scale = None
    if _name(args.strategy) == "tensor_group":
        low, high = torch.aminmax(x.float())
        global_scale = generate_gparam(low.reshape(1), high.reshape(1))
    scale, zero_point = compute_dynamic_scales_and_zp(x, args, module=None, global_scale=global_scale)
    return fake_quantize(x, scale, zero_point, args, global_scale=global_scale).to(x.dtype)


def _library_activations(model: Any) -> list[Any]:
    return [m for _, m in _linears(model)
            if getattr(getattr(m, "quantization_scheme", None), "input_activations", None) is not None
            and getattr(m, "quantization_status", None) is not None and getattr(m, "quantization_enabled", True)]


def simulate_activations(model: Any, q: Quantization, hooks: list) -> str | None:
    """What quantizes the Linear layers' inputs: the library, or pre-hooks registered here."""
    if activation_bits(q) is None:
        return None
    library = _library_activations(model)
    if library:
        args = library[0].quantization_scheme.input_activations
        return f"activations {describe_args(args)} (compressed-tensors, {len(library)} layers)"
    args = activation_args(q)
    layers = _linears(model)
    for _, module in layers:
        hooks.append(module.register_forward_pre_hook(lambda _m, inputs: (fake_quantize_dynamic(inputs[0], args),
                                                                          *inputs[1:])))
    return f"activations {describe_args(args)} (forward pre-hooks, {len(layers)} layers)"


def kv_args(kv: str, head_dim: int) -> Any:
    """KV-cache QuantizationArgs: intN asymmetric per token and head (groups of ``head_dim``), fp8 per tensor."""
    from compressed_tensors.quantization import QuantizationArgs

    if kv.startswith("fp8"):
        return QuantizationArgs(num_bits=8, type="float", strategy="tensor", symmetric=True, dynamic=True)
    if kv not in ("int8", "int4", "int3"):
        raise ValueError(f"cannot simulate a {kv} KV cache (int8, int4, int3 or fp8)")
    return QuantizationArgs(num_bits=int(kv[3:]), type="int", strategy="group", group_size=head_dim,
                            symmetric=False, dynamic=True)


def _attentions(model: Any) -> list[Any]:
    return [m for m in model.modules() if hasattr(m, "k_proj") and hasattr(m, "v_proj")]


def _head_dim(model: Any, attention: Any) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(getattr(attention, "head_dim", None) or getattr(config, "head_dim", None)
               or config.hidden_size // config.num_attention_heads)


def _library_kv(model: Any) -> Any:
    for module in model.modules():
        args = getattr(getattr(module, "quantization_scheme", None), "input_activations", None)
        if args is not None and hasattr(module, "kv_cache") and type(module.kv_cache).__name__ == "QuantizedKVCache":
            return args
    return None


def simulate_kv_cache(model: Any, q: Quantization, hooks: list) -> str | None:
    """Quantize-dequantize the keys and values as they enter the cache (see the module docstring)."""
    kv = q.kv_cache_dtype
    if not kv or kv == "auto":
        return None
    library = _library_kv(model)
    if library is not None:
        return f"KV cache {describe_args(library)} (compressed-tensors kv_cache_scheme, post-RoPE)"
    attentions = _attentions(model)
    if not attentions:
        raise ValueError(f"cannot simulate a {kv} KV cache: no attention layer with k_proj and v_proj")
    args = None
    for attention in attentions:
        args = kv_args(kv, _head_dim(model, attention))
        for projection in (attention.k_proj, attention.v_proj):
            hooks.append(projection.register_forward_hook(
                lambda _m, _inputs, output, args=args: fake_quantize_dynamic(output, args)))
    return f"KV cache {describe_args(args)} (k_proj/v_proj outputs, pre-RoPE, {len(attentions)} layers)"


def apply(model: Any, quantization: Quantization | None) -> str | None:
    """Make ``model``'s forward pass compute ``quantization``'s activations and KV cache; what was done, in one
    line (None: nothing to simulate beyond the weights). The hooks are kept in ``model.quantmedic_simulation_hooks``."""
    if quantization is None:
        return None
    hooks: list = list(getattr(model, HOOKS_ATTR, []))
    parts = [simulate_activations(model, quantization, hooks), simulate_kv_cache(model, quantization, hooks)]
    setattr(model, HOOKS_ATTR, hooks)
    return "; ".join(p for p in parts if p) or None


def remove(model: Any) -> None:
    """Undo the hooks :func:`apply` registered (the library's own fake quantization stays)."""
    for hook in getattr(model, HOOKS_ATTR, []):
        hook.remove()
    setattr(model, HOOKS_ATTR, [])
