"""The DPO training settings, declared once: ``quantmedic train dpo`` takes its options' defaults and
help from :class:`DPOSettings`, and a study config's ``training:`` section is one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PairsTooLong(ValueError):
    """Some pairs do not fit in ``max_length`` tokens (the message gives the numbers)."""


class ThinkingDropped(ValueError):
    """The model's chat template leaves the thinking of trace pairs out of what would be trained on."""


class DPOSettings(BaseModel):
    """How to train the adapter (all recorded beside it, in ``quantmedic-train.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: int = Field(2048, ge=16, description="Longest pair in tokens (prompt + answer); longer pairs are "
                                                     "refused, not truncated (a medicine's medicine.json gives its "
                                                     "pairs' lengths; reasoning traces need tens of thousands).")
    beta: float = Field(0.1, gt=0, description="DPO's beta (strength of the pull toward the base).")
    loss_type: str = Field("sigmoid", description="TRL DPO loss: sigmoid, ipo, hinge, ...")
    learning_rate: float = Field(5e-5, gt=0)
    epochs: float = Field(1.0, ge=0, description="Passes over the pairs.")
    max_steps: int = Field(-1, description="Stop after this many steps (overrides --epochs; -1: off).")
    batch_size: int = Field(4, ge=1, description="Pairs per device step.")
    gradient_accumulation: int = Field(1, ge=1)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, le=1)
    target_modules: tuple[str, ...] | None = Field(None, description=(
        "Comma-separated modules to adapt (default: q/k/v/o/gate/up/down_proj found in the model; GPTQModel layers "
        "need them named)."))
    qlora: bool = Field(False, description="Load a full-precision base in 4-bit NF4 (bitsandbytes) and train QLoRA.")
    drop_long: bool = Field(False, description="Leave out pairs over --max-length instead of refusing (reported).")
    gradient_checkpointing: bool = False
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (a rerun resumes).")
    seed: int = Field(42, description="Training seed (in a study: the study's seed).")

    @model_validator(mode="after")
    def _some_training(self) -> DPOSettings:
        if self.max_steps == 0 or (self.max_steps < 0 and self.epochs <= 0):
            raise ValueError("train for at least one step (max_steps > 0, or epochs > 0)")
        return self
