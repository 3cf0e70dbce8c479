"""Training: LoRA/QLoRA adapters with TRL's DPO trainer (``dpo``), its settings beside it (``dpo_config``)."""
