"""What the two state file formats share (runner_state.py, ai00_state.py).

Orientation (spec runtime_formats.md; checked against the rwkv pip package in the tests): our
`time_state` (H, N, N) is [value, key] for every version, the layout of RWKV-PEFT's files.
Both formats record {version, n_layer, n_embd, head_size} so a reader can refuse a state for
another model: Ai00 in the safetensors metadata, Runner in a small `rwkvft_state.json` entry of
the .pth zip (torch.load and Runner ignore it; Runner rejects extra tensors, not extra entries).
"""
from __future__ import annotations

from pathlib import Path

from ..adapters.fingerprint import check_fingerprint
from ..errors import UserError
from ..models.schema import infer_config
from ..models.time_state import check_time_states, is_time_state_key

META_ENTRY = "rwkvft_state.json"
META_FIELDS = ("version", "n_layer", "n_embd", "head_size")
_LABELS = {"x070": "RWKV-7", "x060": "RWKV-6", "x052": "RWKV-5.2"}


# ---------------------------------------------------------------- helpers
def meta_of(cfg) -> dict:
    return {"version": cfg.version, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd,
            "head_size": cfg.head_size}


def check_meta(meta: dict, cfg, path) -> None:
    for f in META_FIELDS:
        if f in meta and str(meta[f]) != str(meta_of(cfg)[f]):
            have = _LABELS.get(meta[f], meta[f]) if f == "version" else meta[f]
            want = _LABELS.get(cfg.version) if f == "version" else meta_of(cfg)[f]
            raise UserError(f"state file {path} is for a model with {f} {have}, this one has "
                            f"{want}; use a state trained on this base model")


def split_states(sd: dict) -> tuple[dict, dict]:
    """(time_state tensors, everything else)."""
    states = {k: v for k, v in sd.items() if is_time_state_key(k)}
    return states, {k: v for k, v in sd.items() if k not in states}


def adapter_states(base_sd: dict, adapter_sd: dict, adapter_config: dict):
    """(model config of the base, checked states) of a state adapter, for the writers."""
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


def layer_of_key(key: str) -> int:
    return int(key.split(".")[1])


def no_extra(rest: dict, path: Path) -> None:
    if rest:
        raise UserError(f"{path} holds {len(rest)} tensor(s) that are no time_state (e.g. "
                        f"{sorted(rest)[0]}); a state file holds only blocks.N.att.time_state")
