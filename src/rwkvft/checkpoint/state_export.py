"""State files: write a trained state for RWKV Runner / Ai00, read any state file back.

Orientation (spec runtime_formats.md; checked against the rwkv pip package in the tests): our
`time_state` (H, N, N) is [value, key] for every version, the layout of RWKV-PEFT's files.
- runner-state (.pth): exactly n_layer tensors `blocks.{i}.att.time_state`, our tensor as is.
  Runner uses RWKV-7 states as stored and transposes RWKV-5/6 states (1,2) at load, into the
  pip package's v5/v6 [key, value] layout: so writing our tensor unchanged gives, after that
  load, the state we trained, for every version (the pip v5/v6 class does the same transpose
  when it finds time_state in a model file).
- ai00-state (.state): fp16 safetensors, same keys, last two dims transposed (what Ai00's
  convert_safetensors.py does to every time_state).
Both record {version, n_layer, n_embd, head_size} so a reader can refuse a state for another
model: ai00 in the safetensors metadata, runner in a small `rwkvft_state.json` entry of the .pth
zip (torch.load and Runner ignore it; Runner rejects extra tensors, not extra zip entries).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from ..errors import UserError
from ..foreign_json import state_meta
from ..models.time_state import check_time_states, is_time_state_key
from ..utils import atomic_path, require_file

META_ENTRY = "rwkvft_state.json"
_META_FIELDS = ("version", "n_layer", "n_embd", "head_size")
_LABELS = {"x070": "RWKV-7", "x060": "RWKV-6", "x052": "RWKV-5.2"}


# ---------------------------------------------------------------- helpers
def _meta(cfg) -> dict:
    return {"version": cfg.version, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd,
            "head_size": cfg.head_size}


def _check_meta(meta: dict, cfg, path) -> None:
    for f in _META_FIELDS:
        if f in meta and str(meta[f]) != str(_meta(cfg)[f]):
            have = _LABELS.get(meta[f], meta[f]) if f == "version" else meta[f]
            want = _LABELS.get(cfg.version) if f == "version" else _meta(cfg)[f]
            raise UserError(f"state file {path} is for a model with {f} {have}, this one has "
                            f"{want}; use a state trained on this base model")


def split_states(sd: dict) -> tuple[dict, dict]:
    """(time_state tensors, everything else)."""
    states = {k: v for k, v in sd.items() if is_time_state_key(k)}
    return states, {k: v for k, v in sd.items() if k not in states}


def _adapter_states(base_sd: dict, adapter_sd: dict, adapter_config: dict):
    """(model config of the base, checked states) of a state adapter, for the writers."""
    from .adapter_io import check_fingerprint
    from .rwkv_format import infer_config
    cfg = infer_config(base_sd)
    states, rest = split_states(adapter_sd)
    if not states:
        raise UserError(f"the adapter holds no time_state tensors (method "
                        f"{adapter_config.get('method')!r}); state formats need a --peft state adapter")
    if rest:
        raise UserError(f"the adapter also trains {len(rest)} other tensor(s) (e.g. {sorted(rest)[0]}), "
                        f"which a state file cannot carry; train the state alone (no --train_parts) "
                        f"to export it")
    check_fingerprint(adapter_config.get("base"), base_sd)
    check_time_states(states, cfg, "the adapter")
    return cfg, {k: v.detach().float().cpu() for k, v in states.items()}


# ---------------------------------------------------------------- writers (export formats)
def write_runner_state(base_sd: dict, adapter_sd: dict, adapter_config: dict, output: Path) -> list[str]:
    """RWKV Runner / RWKV-PEFT state .pth (see module docstring)."""
    cfg, states = _adapter_states(base_sd, adapter_sd, adapter_config)
    tensors = {k: states[k].contiguous().clone() for k in sorted(states, key=_layer)}
    with atomic_path(output) as tmp:
        torch.save(tensors, tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            root = z.namelist()[0].split("/")[0]
            z.writestr(f"{root}/{META_ENTRY}", json.dumps(_meta(cfg)))
    return [f"wrote RWKV Runner state {output} ({cfg.n_layer} x time_state "
            f"{tuple(next(iter(states.values())).shape)}, fp32); put it in Runner's state-models/ "
            f"folder and load it beside the base .pth"]


def write_ai00_state(base_sd: dict, adapter_sd: dict, adapter_config: dict, output: Path) -> list[str]:
    """Ai00 / web-rwkv fp16 safetensors `.state` (see module docstring)."""
    from safetensors.torch import save_file
    cfg, states = _adapter_states(base_sd, adapter_sd, adapter_config)
    tensors = {}
    for k in sorted(states, key=_layer):
        t = states[k].transpose(-2, -1).to(torch.float16).contiguous().clone()
        if not torch.isfinite(t).all():
            raise UserError(f"{k} overflows fp16 (|x| > 65504), which Ai00 requires; "
                            f"use --format runner-state instead")
        tensors[k] = t
    meta = {"format": "pt", **{f"rwkvft_{k}": str(v) for k, v in _meta(cfg).items()}}
    with atomic_path(output) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return [f"wrote Ai00 state {output} ({cfg.n_layer} x time_state, fp16, transposed); add it "
            f"as a [[state]] path in Ai00's Config.toml"]


def _layer(key: str) -> int:
    return int(key.split(".")[1])


# ---------------------------------------------------------------- readers (generate --state)
def read_state_file(path, cfg) -> dict:
    """Any state file -> {blocks.i.att.time_state: (H,N,N) fp32, our [value, key] layout},
    checked against model config `cfg` (one-line UserError for another size/layers/version).

    `.state`: Ai00 (transposed fp16 safetensors). `.pth`/`.pt`: RWKV Runner / RWKV-PEFT state,
    or an rwkvft state adapter (adapter_config.json beside it). `.safetensors`: an rwkvft state
    adapter saved with --adapter_format safetensors.
    """
    path = require_file(path, "state file")
    suffix = path.suffix.lower()
    if suffix == ".state":
        states, meta = _read_ai00(path)
    elif suffix in (".pth", ".pt", ".safetensors"):
        states, meta = _read_pth_or_adapter(path)
    else:
        raise UserError(f"cannot tell the format of state file {path}: use a Runner/RWKV-PEFT .pth, "
                        f"an Ai00 .state or an rwkvft adapter rwkv-N.pth")
    _check_meta(meta, cfg, path)
    check_time_states(states, cfg, f"state file {path}")
    return states


def _read_ai00(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any malformed header/data is the user's file
        raise UserError(f"{path} is not a readable safetensors .state file ({str(e)[:100]}); "
                        f"re-export it") from None
    states, rest = split_states(sd)
    _no_extra(rest, path)
    meta = {k[len("rwkvft_"):]: v for k, v in meta.items() if k.startswith("rwkvft_")}
    return {k: v.float().transpose(-2, -1).contiguous() for k, v in states.items()}, meta


def _read_pth_or_adapter(path: Path) -> tuple[dict, dict]:
    from .adapter_io import CONFIG_NAME, read_adapter
    if (path.parent / CONFIG_NAME).exists():
        sd, config = read_adapter(path)
        if config.get("method") == "state":
            states, rest = split_states(sd)
            if rest:
                raise UserError(f"{path} also trains {len(rest)} other tensor(s) (e.g. {sorted(rest)[0]}); "
                                f"pass it with --adapter so they are applied too")
            return {k: v.float() for k, v in states.items()}, state_meta(config.get("base") or {}, path)
    if path.suffix.lower() == ".safetensors":
        raise UserError(f"{path} is no rwkvft state adapter (no adapter_config.json with method "
                        f"state beside it); an Ai00 state file must end in .state")
    from .adapter_io import _strip_prefixes
    from .rwkv_format import read_state_dict
    sd = _strip_prefixes(read_state_dict(path))
    states, rest = split_states(sd)
    _no_extra(rest, path)
    return {k: v.float() for k, v in states.items()}, _pth_meta(path)


def _no_extra(rest: dict, path: Path) -> None:
    if rest:
        raise UserError(f"{path} holds {len(rest)} tensor(s) that are no time_state (e.g. "
                        f"{sorted(rest)[0]}); a state file holds only blocks.N.att.time_state")


def _pth_meta(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as z:
            entry = next((n for n in z.namelist() if n.endswith("/" + META_ENTRY)), None)
            return state_meta(json.loads(z.read(entry)), path) if entry else {}
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError):
        return {}


# ---------------------------------------------------------------- baked into a model file
def merge_state_adapter(base_sd: dict, adapter_sd: dict, config: dict, merge_rest) -> dict:
    """Base + state adapter -> the base (with any train_parts merged by `merge_rest`) plus the
    time_state tensors in fp32, as RWKV-PEFT's merge_state writes them."""
    from .rwkv_format import infer_config
    states, rest = split_states(adapter_sd)
    check_time_states(states, infer_config(base_sd), "the adapter")
    merged = merge_rest(base_sd, rest, {**config, "method": "none"})
    merged.update({k: v.float() for k, v in states.items()})
    return merged


def refuse_baked_x070(version: str) -> None:
    """The rwkv pip package 0.8.32 reads time_state from a model .pth only in its v5/v6 class
    (RWKV_x070 loads the key and never uses it), so a baked RWKV-7 model would run stateless."""
    if version == "x070":
        raise UserError("an RWKV-7 model file cannot carry a state (the rwkv package and Runner "
                        "ignore time_state there); write a state file instead: rwkvft export "
                        "--format runner-state or ai00-state")
