"""`--lora_alpha` of merge, export, eval and generate: one check of the flag for every command.

RWKV-PEFT LoRA files do not record alpha, so these commands take it as a flag; a NaN, Inf or
non-positive flag must be refused as the flag, before it reaches the adapter maths (where it
would look like a diverged adapter).
"""
from __future__ import annotations

import math

from ..errors import UserError


def with_lora_alpha(config: dict, lora_alpha: float | None) -> dict:
    """The adapter `config` with `--lora_alpha` applied (unchanged when the flag is absent)."""
    if lora_alpha is None:
        return config
    if not (math.isfinite(lora_alpha) and lora_alpha > 0):
        raise UserError(f"--lora_alpha must be a positive number, got {lora_alpha:g}; "
                        f"pass the lora_alpha used for training")
    if config.get("method") != "lora":
        raise UserError(f"--lora_alpha applies to LoRA adapters only; this one is "
                        f"{config.get('method')}: drop the flag")
    return dict(config, alpha=lora_alpha)
