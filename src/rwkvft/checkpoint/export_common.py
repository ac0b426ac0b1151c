"""What the export writers share: an adapter split into per-Linear groups and full tensors,
and each group written as an exact low-rank product.

Every writer first calls `checked_merge`, so all fit/shape/NaN checks live in one place
(checkpoint.merge) and an adapter that would not merge is never exported.
"""
from __future__ import annotations

import torch

from ..adapters.miss import effective_d
from ..errors import UserError
from .merge import merge_state_dict

ADAPTER_LOCALS = ("miss", "lora_A", "lora_B", "lora_A0", "lora_B0")


def checked_merge(base_sd: dict, adapter_sd: dict, config: dict) -> dict:
    """merge_state_dict, which validates every adapter tensor against the base."""
    return merge_state_dict(base_sd, adapter_sd, config)


def split_adapter(adapter_sd: dict) -> tuple[dict[str, dict], dict]:
    """-> ({Linear prefix: {local name: tensor}}, {full tensor key: tensor})."""
    groups: dict[str, dict] = {}
    full = {}
    for k, t in adapter_sd.items():
        prefix, _, local = k.rpartition(".")
        if local in ADAPTER_LOCALS:
            groups.setdefault(prefix, {})[local] = t.float()
        else:
            full[k] = t
    return groups, full


def method_label(config: dict) -> str:
    method = config.get("method", "?")
    return f"{method} {config.get('mode', 'default')}" if method == "miss" else method


def shard_tiling(r: int, in_features: int) -> torch.Tensor:
    """E (r, in) with E[c, i] = 1 where i % r == c: MiSS default dW = D^T E exactly
    (every width-r input block, the short last one included, sees the same D)."""
    cols = torch.arange(in_features)
    e = torch.zeros(r, in_features)
    e[cols % r, cols] = 1.0
    return e


def low_rank_factors(parts: dict, config: dict, weight: torch.Tensor, fmt: str):
    """(up (out, k), down (k, in), scale) with dW = scale * up @ down exactly, or UserError."""
    method = config.get("method")
    out_f, in_f = weight.shape
    if method == "lora":
        alpha = config.get("alpha")
        if alpha is None:
            raise UserError("this LoRA adapter has no alpha (RWKV-PEFT files do not store it); "
                            "pass --lora_alpha with the value used for training")
        return parts["lora_B"], parts["lora_A"], float(alpha) / parts["lora_A"].shape[0]
    if method == "pissa":
        # W - B0 A0 + B A = W + [B, -B0] [A; A0]: a rank-2r LoRA with scale 1
        up = torch.cat([parts["lora_B"], -parts["lora_B0"]], dim=1)
        return up, torch.cat([parts["lora_A"], parts["lora_A0"]], dim=0), 1.0
    mode = config.get("mode", "default")
    if mode in ("bat", "bat_in"):
        raise UserError(f"MiSS {mode} adds W-dependent blocks (W_ij T + T), which no low-rank "
                        f"{fmt} file can express; write the merged model instead: "
                        f"rwkvft merge --format st (Ai00) or --format pth")
    d = effective_d(parts["miss"], mode, out_f)
    return d.t(), shard_tiling(d.shape[0], in_f), 1.0
