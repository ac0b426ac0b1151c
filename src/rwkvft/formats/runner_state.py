"""RWKV Runner / RWKV-PEFT state files (`rwkvft export --format runner-state`, `generate --state`).

`.pth` of exactly n_layer tensors `blocks.{i}.att.time_state`, our tensor as is. Runner uses
RWKV-7 states as stored and transposes RWKV-5/6 states (1,2) at load, into the pip package's
v5/v6 [key, value] layout: so writing our tensor unchanged gives, after that load, the state we
trained, for every version (the pip v5/v6 class does the same transpose when it finds
time_state in a model file). Reading also takes an rwkvft state adapter (adapter_config.json
beside it, .pth or .safetensors). The metadata travels as a `rwkvft_state.json` zip entry.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from ..adapters.registry import get as method_of
from ..errors import UserError
from ..foreign_json import state_meta
from ..utils import atomic_path
from .adapter_file import CONFIG_NAME, read_adapter_file
from .common import load_pth, stats
from .registry import Format, register
from .rwkv_peft import strip_prefixes
from .state_common import META_ENTRY, is_time_state_key, adapter_states, layer_of_key, meta_of, no_extra, split_states


def write_runner_state(base_sd: dict, adapter_sd: dict, adapter_config: dict, output: Path) -> list[str]:
    """RWKV Runner / RWKV-PEFT state .pth (see module docstring)."""
    cfg, states = adapter_states(base_sd, adapter_sd, adapter_config)
    tensors = {k: states[k].contiguous().clone() for k in sorted(states, key=layer_of_key)}
    with atomic_path(output) as tmp:
        torch.save(tensors, tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            root = z.namelist()[0].split("/")[0]
            z.writestr(f"{root}/{META_ENTRY}", json.dumps(meta_of(cfg)))
    return [f"wrote RWKV Runner state {output} ({cfg.n_layer} x time_state "
            f"{tuple(next(iter(states.values())).shape)}, fp32); put it in Runner's state-models/ "
            f"folder and load it beside the base .pth"]


def read(path: Path) -> tuple[dict, dict]:
    """(states {key: fp32 (H,N,N) [value, key]}, recorded meta)."""
    if (path.parent / CONFIG_NAME).exists():
        sd, config = read_adapter_file(path)
        if method_of(config.get("method")).carries_state:
            states, rest = split_states(sd)
            if rest:
                raise UserError(f"{path} also trains {len(rest)} other tensor(s) (e.g. {sorted(rest)[0]}); "
                                f"pass it with --adapter so they are applied too")
            return {k: v.float() for k, v in states.items()}, state_meta(config.get("base") or {}, path)
    if path.suffix.lower() == ".safetensors":
        raise UserError(f"{path} is no rwkvft state adapter (no adapter_config.json with method "
                        f"state beside it); an Ai00 state file must end in .state")
    sd = strip_prefixes(load_pth(path))
    states, rest = split_states(sd)
    no_extra(rest, path)
    return {k: v.float() for k, v in states.items()}, _pth_meta(path)


def _pth_meta(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as z:
            entry = next((n for n in z.namelist() if n.endswith("/" + META_ENTRY)), None)
            return state_meta(json.loads(z.read(entry)), path) if entry else {}
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def describe(path: Path, sd: dict) -> dict:
    shapes = {tuple(t.shape) for t in sd.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise UserError(f"state tensors have shapes {sorted(shapes)}; expected one (H, N, N) per layer")
    h, n, _ = next(iter(shapes))
    fmt = path.suffix.lower().lstrip(".") or "pth"
    runtime = "Ai00 (.state, fp16 safetensors)" if path.suffix.lower() == ".state" else \
        "RWKV Runner / rwkv pip (.pth)"
    return {"kind": "state", "format": fmt, "runtime": runtime, "n_layer": len(sd), "n_head": h,
            "head_size": n, "n_embd": h * n, **stats(sd)}


def claims(path: Path, sd: dict) -> bool:
    return bool(sd) and all(is_time_state_key(k) for k in sd)


FORMAT = register(Format(
    name="runner-state", kind="state", needs="initial_state",
    what="RWKV Runner / RWKV-PEFT state .pth (exactly n_layer blocks.N.att.time_state)",
    recognise=lambda p: p.is_file() and p.suffix.lower() in (".pth", ".pt", ".safetensors"),
    read=read, claims=claims, describe=describe,
    export=lambda b, a, c, out, opts: write_runner_state(b, a, c, out)))
