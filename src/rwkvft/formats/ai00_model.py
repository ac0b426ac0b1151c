"""Ai00 / web-rwkv model `.st` (spec runtime_formats.md; Ai00's convert_safetensors.py): official
keys lower-cased and renamed (time_faaaa -> time_first, time_maa -> time_mix, lora_A/B ->
lora.0/1), fp16 only, and the last two dims of the "x @ w" matrices transposed (a substring
test, as the script does it). `ai00_key` is the one copy of that naming rule (Ai00 LoRA and
state files use it too). A `.st` holding official names (write_state_dict to a .st path) reads
as it is.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..utils import atomic_path
from .common import load_safetensors
from .registry import Format, register

_AI00_RENAMES = (("time_faaaa", "time_first"), ("time_maa", "time_mix"),
                 ("lora_A", "lora.0"), ("lora_B", "lora.1"))
_AI00_TRANSPOSED = ("time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2", "w1", "w2",
                    "a1", "a2", "g1", "g2", "v1", "v2", "time_state", "lora.0")


def ai00_key(key: str, ndim: int) -> tuple[str, bool]:
    """(Ai00 name of an official key, whether its last two dims are transposed there)."""
    for old, new in _AI00_RENAMES:
        key = key.replace(old, new)
    key = key.lower()
    return key, ndim >= 2 and any(s in key for s in _AI00_TRANSPOSED)


def ai00_state_dict(sd: dict) -> dict:
    """Official state dict -> the tensors Ai00 loads from a .st file (fp16, contiguous, owned)."""
    out = {}
    for k, t in sd.items():
        k, transposed = ai00_key(k, t.dim())
        if transposed:
            t = t.transpose(-2, -1)
        t = t.detach().to("cpu", torch.float16).contiguous().clone()
        if not torch.isfinite(t).all():
            raise UserError(f"tensor {k} overflows fp16 (|x| > 65504), which Ai00 requires; "
                            f"write --format pth instead")
        out[k] = t
    return out


def is_ai00_model(sd: dict, fmt: str) -> bool:
    if any(".time_first" in k for k in sd):
        return True   # RWKV-5/6 .st: time_faaaa renamed
    w1, emb = sd.get("blocks.0.att.w1"), sd.get("emb.weight")
    if w1 is None or emb is None or w1.dim() != 2:
        return False
    # RWKV-7: the .st stores w1 as (D, C), the official file as (C, D)
    return w1.shape[0] != emb.shape[1] or (fmt == "st" and w1.shape[0] == w1.shape[1])


def official_from_ai00(sd: dict) -> dict:
    """Undo Ai00's renames and transposes (ai00_key) so the schema can read the file."""
    v6 = "blocks.0.att.time_mix_x" in sd   # only RWKV-6 has time_maa_x (renamed time_mix_x)
    out = {}
    for k, t in sd.items():
        name = k.replace("time_first", "time_faaaa")
        if v6:
            name = name.replace("time_mix", "time_maa")
        _, transposed = ai00_key(name, t.dim())
        out[name] = t.transpose(-2, -1) if transposed else t
    return out


def recognise(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".st"


def read(path) -> dict:
    sd = load_safetensors(Path(path))
    return official_from_ai00(sd) if is_ai00_model(sd, "st") else sd


def write(sd: dict, path: Path, dtype: torch.dtype | None) -> Path:
    if dtype not in (None, torch.float16):
        raise UserError(f"--format st is always fp16 (Ai00 requires it); drop --dtype "
                        f"{str(dtype).replace('torch.', '')} or use --format pth")
    from safetensors.torch import save_file
    tensors = ai00_state_dict(sd)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return path


def claims(path: Path, sd: dict) -> bool:
    return is_ai00_model(sd, path.suffix.lower().lstrip("."))


FORMAT = register(Format(name="st", kind="model", what="Ai00 / web-rwkv model (.st: fp16, Ai00 names)",
                         recognise=recognise, read=read, write=write, claims=claims))
