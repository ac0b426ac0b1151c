"""RWKV-PEFT's adapter files: `rwkv-N.pth` without adapter_config.json, keys maybe prefixed
`model.` (Lightning / DeepSpeed wrappers). A reader of a foreign format, so it tells methods
apart by RWKV-PEFT's own tensor names: `.disha` / `.bone` -> `.miss` (2-D: default MiSS, 3-D:
RWKV-PEFT's input-block bat = "bat_in"); `.lora_A` / `.lora_B` -> LoRA whose alpha must come
from the user (--lora_alpha); `.att.time_state` -> a state adapter; anything else: full tensors.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .common import SAFETENSORS_SUFFIXES, load_pth, load_safetensors
from .registry import Format, register

_WRAPPER_PREFIXES = ("model.", "_forward_module.", "module.")
_FOREIGN_MISS = (".disha", ".bone")


def strip_prefixes(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        for p in _WRAPPER_PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


def foreign_config(sd: dict, path: Path) -> tuple[dict, dict]:
    """Config for a file without adapter_config.json (RWKV-PEFT), with keys normalised."""
    miss = {k: v for k, v in sd.items() if k.endswith(_FOREIGN_MISS + (".miss",))}
    lora = [k for k in sd if k.endswith((".lora_A", ".lora_B"))]
    if miss and lora:
        raise UserError(f"{path} mixes MiSS and LoRA tensors; merge one adapter at a time")
    if lora:
        return sd, {"method": "lora", "alpha": None, "source": "rwkv-peft"}
    if not miss:
        state = any(k.endswith(".att.time_state") for k in sd)  # RWKV-PEFT --peft state
        return sd, {"method": "state" if state else "none", "source": "rwkv-peft"}
    dims = {v.dim() for v in miss.values()}
    if len(dims) != 1 or dims - {2, 3}:
        raise UserError(f"{path}: MiSS/DiSHA tensors must all be 2-D (bone) or all 3-D (bat); "
                        f"found {sorted(dims)}-D")
    ndim = dims.pop()
    if ndim == 3 and any(k.endswith(".miss") for k in miss):
        raise UserError(f"{path}: 3-D .miss tensors need adapter_config.json beside them to tell "
                        f"HF-style bat from RWKV-PEFT bat; restore it")
    renamed = {(k.rsplit(".", 1)[0] + ".miss" if k in miss else k): v for k, v in sd.items()}
    return renamed, {"method": "miss", "mode": "default" if ndim == 2 else "bat_in",
                     "source": "rwkv-peft"}


def read(path) -> tuple[dict, dict]:
    path = Path(path)
    raw = load_safetensors(path) if path.suffix.lower() in SAFETENSORS_SUFFIXES else load_pth(path)
    sd = strip_prefixes(raw)
    if not sd:
        raise UserError(f"adapter file {path} holds no tensors; point --adapter at a saved rwkv-N.pth")
    return foreign_config(sd, path)


FORMAT = register(Format(
    name="rwkv-peft", kind="adapter",
    what="RWKV-PEFT adapter file (.pth, no adapter_config.json: .disha/.bone/.lora_A/B/time_state)",
    recognise=lambda p: p.is_file() and not (p.parent / "adapter_config.json").exists(), read=read))
