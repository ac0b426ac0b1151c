"""Ai00 / web-rwkv state files (`rwkvft export --format ai00-state`, `generate --state x.state`).

fp16 safetensors `.state`, keys `blocks.{i}.att.time_state`, last two dims transposed (what
Ai00's convert_safetensors.py does to every time_state); our metadata as `rwkvft_*` entries of
the safetensors header.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..utils import atomic_path
from .registry import Format, register
from .runner_state import claims, describe
from .state_common import adapter_states, layer_of_key, meta_of, no_extra, split_states


def write_ai00_state(base_sd: dict, adapter_sd: dict, adapter_config: dict, output: Path) -> list[str]:
    """Ai00 / web-rwkv fp16 safetensors `.state` (see module docstring)."""
    from safetensors.torch import save_file
    cfg, states = adapter_states(base_sd, adapter_sd, adapter_config)
    tensors = {}
    for k in sorted(states, key=layer_of_key):
        t = states[k].transpose(-2, -1).to(torch.float16).contiguous().clone()
        if not torch.isfinite(t).all():
            raise UserError(f"{k} overflows fp16 (|x| > 65504), which Ai00 requires; "
                            f"use --format runner-state instead")
        tensors[k] = t
    meta = {"format": "pt", **{f"rwkvft_{k}": str(v) for k, v in meta_of(cfg).items()}}
    with atomic_path(output) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return [f"wrote Ai00 state {output} ({cfg.n_layer} x time_state, fp16, transposed); add it "
            f"as a [[state]] path in Ai00's Config.toml"]


def read(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any malformed header/data is the user's file
        raise UserError(f"{path} is not a readable safetensors .state file ({str(e)[:100]}); "
                        f"re-export it") from None
    states, rest = split_states(sd)
    no_extra(rest, path)
    meta = {k[len("rwkvft_"):]: v for k, v in meta.items() if k.startswith("rwkvft_")}
    return {k: v.float().transpose(-2, -1).contiguous() for k, v in states.items()}, meta



FORMAT = register(Format(
    name="ai00-state", kind="state", needs="initial_state",
    what="Ai00 / web-rwkv fp16 safetensors .state (time_state, last two dims transposed)",
    recognise=lambda p: p.is_file() and p.suffix.lower() == ".state",
    read=read, claims=claims, describe=describe,
    export=lambda b, a, c, out, opts: write_ai00_state(b, a, c, out)))
