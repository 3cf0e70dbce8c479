"""Every way quantmedic loads a model, and what it reads from a checkpoint before loading it.

* Checkpoint inspection: the :class:`Quantization` a checkpoint carries (quantmedic's own
  :data:`RECORD_FILE`, else inferred from ``config.json``'s ``quantization_config``).
* Loading for generation (:func:`load_for_generation`, :func:`load_with_adapter`) and for DPO
  training (:func:`load_base`), each the way the checkpoint's kind needs:

  - full precision: as is, or in bitsandbytes 4-bit NF4 for QLoRA;
  - GPTQ / AWQ: through GPTQModel's kernels (its torch kernels on CPU);
  - compressed-tensors (llm-compressor): as is for generation (dequantized at load when simulated,
    with the activations and the KV cache quantized in the forward pass: :mod:`.simulate`), dequantized
    for training (its packed layers take no adapters);
  - bitsandbytes checkpoints: as is, prepared for k-bit training.

Heavy libraries (torch, transformers, peft) are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from quantmedic.taxonomy.errors import InputError, pydantic_error_field, read_text
from quantmedic.taxonomy.records import Quantization

RECORD_FILE = "quantmedic-quantization.json"
TRAIN_RECORD = "quantmedic-train.json"


def has_accelerator() -> bool:
    """Whether torch sees a GPU (or another accelerator)."""
    import torch

    return bool(torch.cuda.is_available() or (hasattr(torch, "accelerator") and torch.accelerator.is_available()))


def _first_weights(config_groups: dict) -> tuple[dict, dict | None]:
    group = next(iter(config_groups.values()), {}) if config_groups else {}
    return group.get("weights") or {}, group.get("input_activations")


def _recipe_method(recipe: str | None) -> str | None:
    if not recipe:
        return None
    for modifier, method in (("AWQModifier", "awq"), ("GPTQModifier", "gptq"), ("QuantizationModifier", "rtn")):
        if re.search(rf"\b{modifier}\b", recipe):
            return method
    return None


def _activation_method(weights: dict, bits: int | None, act_bits: int) -> str:
    """``w8a8``, ``w4a4`` (int), ``fp8``, ``nvfp4`` (fp4, groups of 16) or ``mxfp4`` (groups of 32)."""
    if weights.get("type") == "float":
        if bits == 8:
            return "fp8"
        if bits == 4:
            return {16: "nvfp4", 32: "mxfp4"}.get(weights.get("group_size"), f"fp{bits}a{act_bits}")
    return f"w{bits}a{act_bits}"


def infer_quantization(config: dict, recipe: str | None = None) -> Quantization | None:
    """The Quantization a checkpoint's ``config.json`` describes (None for full precision).

    ``recipe`` is llm-compressor's ``recipe.yaml``, which names the algorithm compressed-tensors omits.

    >>> infer_quantization({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128,
    ...                     "version": "gemm", "zero_point": True}}).format
    'awq-gemm'
    """
    qc = config.get("quantization_config")
    if not qc:
        return None
    kind = str(qc.get("quant_method", "unknown")).lower()
    if kind == "compressed-tensors":
        weights, activations = _first_weights(qc.get("config_groups") or {})
        bits, act_bits = weights.get("num_bits"), (activations or {}).get("num_bits")
        method = _recipe_method(recipe) or "unknown"
        if act_bits:
            method = _activation_method(weights, bits, act_bits)
        kv = qc.get("kv_cache_scheme") or {}
        kv_dtype = f"{'fp' if kv.get('type') == 'float' else 'int'}{kv['num_bits']}" if kv.get("num_bits") else None
        return Quantization(method=method, bits=bits, group_size=weights.get("group_size"), format="compressed-tensors",
                            tool=None, kv_cache_dtype=kv_dtype, extra={"compressed_format": qc.get("format"), "inferred": True,
                                              "symmetric": weights.get("symmetric"), "strategy": weights.get("strategy"),
                                              "algorithm": _recipe_method(recipe)})
    quantizer = (qc.get("meta") or {}).get("quantizer") or qc.get("quantizer")
    tool = " ".join(str(quantizer[0]).split(":", 1)) if isinstance(quantizer, list) and quantizer else None
    if kind == "awq":
        fmt = f"awq-{str(qc.get('version') or qc.get('format') or 'gemm').lower()}"
        return Quantization(method="awq", bits=qc.get("bits"), group_size=qc.get("group_size"), tool=tool, format=fmt,
                            extra={"inferred": True, "zero_point": qc.get("zero_point")})
    if kind == "gptq":
        return Quantization(method="gptq", bits=qc.get("bits"), group_size=qc.get("group_size"), tool=tool,
                            format=str(qc.get("checkpoint_format") or "gptq"),
                            extra={"inferred": True, "desc_act": qc.get("desc_act"), "sym": qc.get("sym")})
    bits = qc.get("bits") or (4 if qc.get("load_in_4bit") else 8 if qc.get("load_in_8bit") else None)
    return Quantization(method=kind, bits=bits, group_size=qc.get("group_size"), format=kind, extra={"inferred": True})


def read_quantization(model_dir: str | Path) -> Quantization | None:
    """The checkpoint's Quantization: its record file, else inferred from config.json (None: full precision)."""
    model_dir = Path(model_dir)
    record = model_dir / RECORD_FILE
    if record.is_file():
        return Quantization.model_validate_json(record.read_text(encoding="utf-8"))
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        return None
    recipe = model_dir / "recipe.yaml"
    return infer_quantization(json.loads(config_path.read_text(encoding="utf-8")),
                              recipe.read_text(encoding="utf-8") if recipe.is_file() else None)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def could_be_hub_id(name: str | Path) -> bool:
    """Whether a path that does not exist here can name a Hugging Face Hub repo: ``name`` or ``org/name``, and not
    under a folder that exists here (``models/llama`` with a ``models/`` folder is a mistyped local path)."""
    text = str(name)
    return bool(_HUB_ID.fullmatch(text)) and not ("/" in text and Path(text.split("/")[0]).is_dir())


def check_model(model: str | Path, flag: str = "MODEL") -> None:
    """Refuse, before anything heavy is imported, a model that cannot load: a missing path that cannot be a
    Hugging Face Hub id (``org/name``, and not under a local folder), a file, a folder without ``config.json``,
    or a ``config.json`` / quantization record that does not parse. Hub ids are left to the loader."""
    path = Path(model).expanduser()
    if not path.exists():
        if not could_be_hub_id(model):
            raise InputError(model, "no such model folder (nor a Hugging Face Hub id such as org/name)", field=flag)
        return
    if not path.is_dir():
        raise InputError(path, "is a file, not a model folder", field=flag)
    config = path / "config.json"
    if not config.is_file():
        raise InputError(path, "not a model folder (no config.json)", field=flag)
    try:
        json.loads(read_text(config, "model config"))
    except json.JSONDecodeError as error:
        raise InputError(config, f"not valid JSON ({error.msg})", line=error.lineno) from None
    record = path / RECORD_FILE
    if record.is_file():
        try:
            Quantization.model_validate_json(read_text(record, "quantization record"))
        except ValidationError as error:
            first = error.errors()[0]
            raise InputError(record, first["msg"], field=pydantic_error_field(first)) from None


def quantization_of(model: str | Path) -> Quantization | None:
    """:func:`read_quantization` for a folder; for a Hub id, inferred from its config (fetches config.json only)."""
    if Path(model).exists():
        return read_quantization(model)
    from transformers import AutoConfig

    return infer_quantization(AutoConfig.from_pretrained(str(model)).to_dict())


def default_cpu_workers() -> int:
    """GPTQModel's CPU workers: at least 2 (with 1, its AWQ fails on a 2-core machine)."""
    return max(2, min(12, ((os.cpu_count() or 1) + 1) // 2))


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for ``generate``, its tokenizer, its label, how it is quantized, and what of that is
    simulated (None: nothing; see :mod:`.simulate`)."""

    model: Any
    tokenizer: Any
    name: str
    quantization: Quantization | None
    simulation: str | None = None


def checkpoint_name(model_dir: str | Path) -> str:
    """A readable model name: the folder name (or the Hub id as given)."""
    path = Path(model_dir)
    return path.name if path.exists() else str(model_dir)


DEQUANTIZED = "weights dequantized by compressed-tensors"


def _match_weight_dtype(model: Any) -> None:
    """compressed-tensors unpacks fp4 weights in bfloat16 whatever the model's dtype: bring them to it."""
    import torch

    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (isinstance(module, torch.nn.Linear) and weight is not None and weight.is_floating_point()
                and weight.dtype != model.dtype):
            weight.data = weight.data.to(model.dtype)


def load_for_generation(model_dir: str | Path, *, device: str | None = None, dtype: str = "auto",
                        simulate: bool = False) -> LoadedModel:
    """Load a full-precision or quantized checkpoint (compressed-tensors, GPTQ, AWQ) with transformers.

    GPTQ and AWQ checkpoints run through GPTQModel's kernels (its torch kernels on CPU); a Hub id
    is downloaded by transformers. ``device``: ``cuda``/``cpu`` (default: cuda when available).
    ``simulate``: compressed-tensors weights are dequantized at load, and the activations' and the KV
    cache's quantization the record names is simulated in the forward pass (:func:`.simulate.apply`);
    what was, is :attr:`LoadedModel.simulation`.
    """
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(default_cpu_workers()))
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if has_accelerator() else "cpu")
    quantization = quantization_of(model_dir)
    compressed = quantization is not None and quantization.format == "compressed-tensors"
    options: dict[str, Any] = {}
    if simulate and compressed:
        from transformers import CompressedTensorsConfig

        options["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, device_map=device, **options)
    model.eval()
    simulation = DEQUANTIZED if compressed else None
    if options:
        _match_weight_dtype(model)
    if compressed and Path(model_dir).is_dir():
        apply_online_transforms(model, model_dir)
    if simulate:
        from .simulate import apply

        simulation = "; ".join(p for p in (simulation, apply(model, quantization)) if p) or None
    return LoadedModel(model=model, tokenizer=generation_tokenizer(model_dir), name=checkpoint_name(model_dir),
                       quantization=quantization, simulation=simulation)


def apply_online_transforms(model: Any, checkpoint_dir: str | Path) -> bool:
    """Add a QuIP checkpoint's online rotations (``location`` input/output of its ``transform_config``)
    to ``model`` loaded from it by transformers, with their saved matrices; False if it has none.

    transformers 5.17 loads the fused (weight-side) part of compressed-tensors transforms but not the
    online hooks, so without this a QuIP checkpoint computes wrong outputs.
    """
    config = json.loads((Path(checkpoint_dir) / "config.json").read_text()).get("quantization_config") or {}
    if not config.get("transform_config"):
        return False
    from compressed_tensors.transform import TransformConfig, apply_transform_config
    from safetensors.torch import load_file

    transforms = TransformConfig.model_validate(config["transform_config"])
    for scheme in transforms.config_groups.values():
        scheme.apply = [a for a in scheme.apply if a.location in ("input", "output")]
    transforms.config_groups = {k: s for k, s in transforms.config_groups.items() if s.apply}
    if not transforms.config_groups:
        return False
    apply_transform_config(model, transforms)
    suffixes = tuple(f"_{where}.weight" for where in ("input", "output"))
    state = {}
    for shard in sorted(Path(checkpoint_dir).glob("*.safetensors")):
        state.update({k: v for k, v in load_file(shard).items() if k.endswith(suffixes)})
    model.load_state_dict(state, strict=False)
    for name, parameter in model.named_parameters():
        if name.endswith(suffixes):
            parameter.requires_grad_(False)
    return True


def generation_tokenizer(model_dir: str | Path) -> Any:
    """The model's tokenizer set up for batched generation: left padding, a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def base_kind(quantization: Quantization | None, qlora: bool) -> str:
    """How the base is loaded: ``full``, ``nf4`` (QLoRA), ``gptqmodel``, ``compressed-tensors-dequantized`` or ``bitsandbytes``.

    >>> base_kind(None, qlora=True), base_kind(Quantization(method="gptq", bits=4), qlora=False)
    ('nf4', 'gptqmodel')
    """
    if quantization is None or quantization.method == "none":
        return "nf4" if qlora else "full"
    if qlora:
        raise ValueError(f"--qlora quantizes a full-precision base; this checkpoint is already {quantization.method} "
                         f"({quantization.format}): train LoRA over it without --qlora")
    if quantization.format == "compressed-tensors":
        return "compressed-tensors-dequantized"
    if quantization.method in ("gptq", "awq"):
        return "gptqmodel"
    if quantization.method == "bitsandbytes":
        return "bitsandbytes"
    raise ValueError(f"cannot train over a {quantization.method} ({quantization.format}) checkpoint")


def load_base(model: str | Path, kind: str, *, device: str | None = None, for_training: bool = True) -> Any:
    """Load the base model the way ``kind`` says (see the module docstring)."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(default_cpu_workers()))
    import torch
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if has_accelerator() else "cpu")
    options: dict[str, Any] = {"device_map": device}
    if kind == "nf4":
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        options["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                            bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True)
    elif kind == "compressed-tensors-dequantized":
        from transformers import CompressedTensorsConfig

        options["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    else:
        options["dtype"] = "auto"
    loaded = AutoModelForCausalLM.from_pretrained(str(model), **options)
    if for_training and kind in ("nf4", "bitsandbytes"):
        from peft import prepare_model_for_kbit_training

        loaded = prepare_model_for_kbit_training(loaded, use_gradient_checkpointing=False)
    return loaded


def adapter_base_load(adapter_dir: str | Path) -> str | None:
    """How the adapter's base was loaded for training (from its record), if it was made by quantmedic."""
    path = Path(adapter_dir) / TRAIN_RECORD
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("base_load")


def load_with_adapter(model: str | Path, adapter_dir: str | Path, *, device: str | None = None,
                      simulate: bool = False) -> Any:
    """The base loaded as it was for training, with the adapter on top, ready for ``generate``; ``simulate``: as
    :func:`load_for_generation` (the hooks go on the adapted layers, LoRA deltas included)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise InputError(adapter_dir, "is not a PEFT adapter folder (no adapter_config.json)", field="--adapter")
    quantization = quantization_of(model)
    kind = adapter_base_load(adapter_dir) or base_kind(quantization, qlora=False)
    base = load_base(model, kind, device=device, for_training=False)
    adapted = PeftModel.from_pretrained(base, str(adapter_dir))
    adapted.eval()
    simulation = DEQUANTIZED if kind == "compressed-tensors-dequantized" else None
    if kind == "compressed-tensors-dequantized":
        _match_weight_dtype(base)
    if simulate:
        from .simulate import apply

        simulation = "; ".join(p for p in (simulation, apply(adapted, quantization)) if p) or None
    return LoadedModel(model=adapted, tokenizer=generation_tokenizer(model), name=adapted_name(model, adapter_dir),
                       quantization=quantization, simulation=simulation)


def adapted_name(model: str | Path, adapter_dir: str | Path) -> str:
    """The model label of attempts generated with an adapter: ``BASE+ADAPTER``."""
    return f"{checkpoint_name(model)}+{Path(adapter_dir).name}"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())
