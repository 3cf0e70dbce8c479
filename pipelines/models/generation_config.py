"""The generation settings, declared once: ``quantmedic generate`` takes its options' defaults and
help from :class:`GenerationSettings`, and a study config's ``generation:`` section is one."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BackendName = Literal["auto", "transformers", "vllm", "openai"]
BACKENDS: tuple[str, ...] = ("auto", "transformers", "vllm", "openai")


class SamplingSettings(BaseModel):
    """How to sample: ``n`` samples per problem; temperature 0 is greedy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(1, ge=1, description="Samples per problem.")
    temperature: float = Field(0.0, ge=0.0, description="0: greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(2048, ge=1, description="Token limit of one solution.")
    seed: int = Field(0, description="Base seed; each sample's seed derives from it, the problem and the sample "
                                     "index (in a study: the study's seed).")


class GenerationSettings(SamplingSettings):
    """Sampling plus where it runs."""

    backend: BackendName = Field("auto", description="auto (vllm with a GPU, openai with --base-url, else "
                                                     "transformers), transformers, vllm or openai.")
    batch_size: int = Field(8, ge=1, description="Prompts per batch (transformers).")
    concurrency: int = Field(4, ge=1, description="Requests in flight (openai).")
    kv_cache_dtype: str | None = Field(None, description="vLLM KV-cache dtype, e.g. fp8 (recorded in the attempts' "
                                                         "quantization).")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint (the openai backend).")
    served_model: str | None = Field(None, description="Model name served at --base-url (default: MODEL).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Variable holding the endpoint's API key.")

    def sampling(self) -> SamplingSettings:
        """Just the sampling settings (what the engines and the attempts' records see)."""
        return SamplingSettings(**self.model_dump(include=set(SamplingSettings.model_fields)))
