"""The generation settings, declared once: ``quantmedic generate`` takes its options' defaults and
help from :class:`GenerationSettings`, and a study config's ``generation:`` section is one.

A *preset* is a named protocol (:data:`PRESETS`): it fills every setting it names that is not given
explicitly, so ``--preset reasoning --max-tokens 4096`` is the reference protocol with a shorter limit.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BackendName = Literal["auto", "transformers", "vllm", "openai"]
BACKENDS: tuple[str, ...] = ("auto", "transformers", "vllm", "openai")
PromptStyle = Literal["steps", "reasoning"]
SampleSeeds = Literal["derived", "consecutive"]
PresetName = Literal["reasoning"]
ExecutorBackend = Literal["mp", "ray"]
PARALLEL: tuple[str, ...] = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
                             "distributed_executor_backend")
"""The vLLM parallelism settings (each one of vLLM's own engine arguments, under the same name)."""

PRESETS: dict[str, dict[str, Any]] = {
    "reasoning": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 32768, "n": 3, "seed": 42,
                  "sample_seeds": "consecutive", "prompt": "reasoning"},
}
"""The presets' values. ``reasoning``: the protocol of *Quantization Hurts Reasoning?* (arXiv 2504.04823)
for reasoning models — temperature 0.6, top-p 0.95, up to 32,768 new tokens, three samples per
problem seeded 42, 43 and 44, the model's own chat template with the problem and "Please reason step by
step, and put your final answer within \\boxed{}." (no step format)."""


class SamplingSettings(BaseModel):
    """How to sample: ``n`` samples per problem; temperature 0 is greedy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(1, ge=1, description="Samples per problem.")
    temperature: float = Field(0.0, ge=0.0, description="0: greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling: the probability mass sampled from.")
    max_tokens: int = Field(2048, ge=1, description="Token limit of one completion (a reasoning model's thinking "
                                                    "and solution together).")
    seed: int = Field(0, description="Base seed of the samples' seeds (see --sample-seeds; in a study: the "
                                     "study's seed).")


class GenerationSampling(SamplingSettings):
    """Sampling as ``generate`` does it: the prompt, how each sample is seeded, and the preset (recorded)."""

    preset: PresetName | None = Field(None, description="A named protocol filling every setting not given "
                                                        "explicitly. reasoning: the reference study's for reasoning "
                                                        "models (temperature 0.6, top-p 0.95, 32768 tokens, 3 "
                                                        "samples seeded 42, 43, 44, the reasoning prompt).")
    prompt: PromptStyle = Field("steps", description="steps: ask for 'Step 1: ...' paragraphs; reasoning: the "
                                                     "problem and 'Please reason step by step, and put your final "
                                                     "answer within \\boxed{}.' (reasoning models; the thinking "
                                                     "is split from the solution).")
    sample_seeds: SampleSeeds = Field("derived", description="derived: each sample's seed is a hash of the seed, "
                                                             "the problem and the sample index; consecutive: sample "
                                                             "i is seeded seed + i on every problem (42, 43, 44).")

    @model_validator(mode="before")
    @classmethod
    def _preset_fills_what_is_not_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            return {**PRESETS[data["preset"]], **data}
        return data

    def sample_seed_base(self, index: int) -> int | None:
        """The seed of sample ``index`` when it is the same on every problem (consecutive), else None."""
        return self.seed + index if self.sample_seeds == "consecutive" else None


class GenerationSettings(GenerationSampling):
    """Sampling plus where it runs."""

    backend: BackendName = Field("auto", description="auto (vllm with a GPU, openai with --base-url, else "
                                                     "transformers), transformers, vllm or openai.")
    batch_size: int = Field(8, ge=1, description="Prompts per batch (transformers).")
    concurrency: int = Field(4, ge=1, description="Requests in flight per server (openai).")
    kv_cache_dtype: str | None = Field(None, description="vLLM KV-cache dtype, e.g. fp8 (recorded in the attempts' "
                                                         "quantization).")
    simulate: bool = Field(False, description=(
        "Run a checkpoint whose activation or KV-cache quantization has no kernel here simulated (quantize-dequantize "
        "in the transformers forward pass; recorded as simulated). A checkpoint quantized with simulate: true "
        "is always run so."))
    base_url: str | tuple[str, ...] | None = Field(None, description=(
        "OpenAI-compatible endpoint (the openai backend); repeat it for several servers of the same model, which "
        "share the requests (each new one goes to the server with the fewest in flight). For a reasoning model "
        "served by vLLM start it with `vllm serve MODEL --reasoning-parser deepseek_r1`: its reasoning_content is "
        "the thinking."))
    served_model: str | None = Field(None, description="Model name served at --base-url (default: MODEL).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Variable holding the endpoint's API key.")
    tensor_parallel_size: int = Field(1, ge=1, strict=True, description=(
        "vLLM: split each layer over N GPUs of one node (tensor parallel)."))
    pipeline_parallel_size: int = Field(1, ge=1, strict=True, description=(
        "vLLM: split the layers into N consecutive stages, one per GPU (or node, with --distributed-executor-backend "
        "ray): for a model too big for one node's tensor parallelism."))
    data_parallel_size: int = Field(1, ge=1, strict=True, description=(
        "vLLM: N replicas of the model, each on tensor x pipeline GPUs, vLLM sharing the requests between them (its "
        "AsyncLLM engine, as `vllm serve --data-parallel-size N`: the offline LLM class has no data parallelism)."))
    distributed_executor_backend: ExecutorBackend | None = Field(None, description=(
        "vLLM's workers: mp (processes on this node; vLLM's choice by default) or ray, for multi-node: start a Ray "
        "cluster first (`ray start --head` on one node, `ray start --address HEAD:6379` on the others), then run "
        "here, and vLLM places the workers (and the data-parallel replicas) on it."))

    @field_validator("base_url", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """One URL stays a string (a study's key is unchanged); several are a tuple; none is None."""
        if isinstance(value, (list, tuple)):
            urls = tuple(dict.fromkeys(value))  # a server given twice is one server
            return None if not urls else urls[0] if len(urls) == 1 else urls
        return value

    @model_validator(mode="after")
    def _parallelism_is_vllm(self) -> GenerationSettings:
        if self.backend in ("transformers", "openai") and (given := self.parallelism()):
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ValueError(f"{flags} need the vllm backend (a server's parallelism is set where it is started: "
                             f"`vllm serve --tensor-parallel-size N`), not {self.backend}")
        return self

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every ``base_url``, in the order given."""
        return () if self.base_url is None else (self.base_url,) if isinstance(self.base_url, str) else self.base_url

    def parallelism(self) -> dict[str, Any]:
        """The parallelism settings that are not vLLM's defaults (what vLLM is given and the attempts record)."""
        return {k: getattr(self, k) for k in PARALLEL if getattr(self, k) != type(self).model_fields[k].default}

    @property
    def world_size(self) -> int:
        """GPUs the vLLM engine takes: tensor x pipeline x data parallel sizes."""
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size

    def sampling(self) -> GenerationSampling:
        """Just the sampling settings (what the engines and the attempts' records see)."""
        return GenerationSampling(**self.model_dump(include=set(GenerationSampling.model_fields)))
