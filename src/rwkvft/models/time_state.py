"""Per-layer initial WKV states (`blocks.{i}.att.time_state`, (H, N, N) fp32 [value, key]).

A model whose att modules hold a `time_state` starts every sequence called without a state from
it instead of zeros (models/rwkv7.py `initial_wkv`). State tuning trains it (adapters.state);
a model file may also carry it baked in (RWKV-PEFT's merge_state, our merge of an RWKV-6/5
state adapter), which the `rwkv` pip package reads for RWKV-5/6.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import UserError
from .schema import ModelConfig

_KEY = re.compile(r"^blocks\.(\d+)\.att\.time_state$")


def time_state_key(layer: int) -> str:
    return f"blocks.{layer}.att.time_state"


def is_time_state_key(key: str) -> bool:
    return bool(_KEY.match(key))


def check_time_states(states: dict, cfg: ModelConfig, what: str) -> None:
    """UserError (one line) unless `states` holds exactly cfg.n_layer tensors of shape (H, N, N)."""
    want = (cfg.n_head, cfg.head_size, cfg.head_size)
    layers = sorted(int(_KEY.match(k).group(1)) for k in states if _KEY.match(k))
    if layers != list(range(cfg.n_layer)) or len(states) != cfg.n_layer:
        missing = sorted(set(range(cfg.n_layer)) - set(layers))
        extra = sorted(set(layers) - set(range(cfg.n_layer)))
        gaps = "; ".join(filter(None, [missing and f"no state for layer(s) {_list(missing)}",
                                       extra and f"states for layer(s) {_list(extra)}, which the "
                                                 f"model does not have"]))
        raise UserError(f"{what} has time_state tensors for {len(layers)} layer(s), the model has "
                        f"{cfg.n_layer} ({gaps or 'a layer appears twice'}); it was made for another "
                        f"model (use a state trained on this base)")
    for k, t in states.items():
        if tuple(t.shape) != want:
            raise UserError(f"{what}: {k} has shape {tuple(t.shape)} but this model's states are "
                            f"{want} (heads, head size, head size); it was made for another model size")
        if not torch.isfinite(t).all():
            raise UserError(f"{what}: {k} contains NaN or Inf; the state is broken (training diverged?)")


def _list(layers: list[int]) -> str:
    return ", ".join(map(str, layers[:5])) + (", ..." if len(layers) > 5 else "")


def set_time_state(model: nn.Module, states: dict, trainable: bool = False) -> list[str]:
    """Give every att module a `time_state` parameter from `states` ({key: (H,N,N)}, checked),
    fp32 on the model's device. Returns the parameter names."""
    check_time_states(states, model.config, "the state")
    device = model.ln_out.weight.device
    for i, block in enumerate(model.blocks):
        t = states[time_state_key(i)].detach().to(device=device, dtype=torch.float32).clone()
        block.att.time_state = nn.Parameter(t, requires_grad=trainable)
    return [time_state_key(i) for i in range(len(model.blocks))]

