"""What the format modules share: loading tensors safely, the official key order, JSON output.

A checkpoint is a flat dict `name -> tensor`. Files are read as data only (`weights_only=True`;
safetensors); every bad file raises one UserError. What the tensors mean (versions, shapes,
infer_config) is the schema in rwkvft.models.schema.
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import torch

from ..errors import UserError, quote

SAFETENSORS_SUFFIXES = (".safetensors", ".st")


def load_safetensors(p: Path, what: str = "safetensors file") -> dict:
    from safetensors.torch import load_file
    try:
        sd = load_file(str(p), device="cpu")
    except Exception as e:  # safetensors raises its own error type for any malformed header/data
        raise UserError(f"{p} is not a readable {what} ({quote(e)}); re-download or re-export it") from e
    # safetensors stores keys sorted by name: put them back in layer order
    return {k: sd[k] for k in official_order(sd)}


def load_pth(p: Path) -> dict:
    # mmap needs the zip container; old pickle-only files (torch < 1.6) load without it
    mmap = zipfile.is_zipfile(p)
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        text = str(e)
        found = re.search(r"GLOBAL (\S+)", text)
        if found:
            raise UserError(f"{p} contains Python objects ({found.group(1)}) that need code to load; "
                            f"rwkvft only loads plain tensor dicts: re-save it as "
                            f"torch.save({{name: tensor}}) from a trusted environment") from e
        from ..data.sniff import data_hint   # training data passed as a model says so
        hint = data_hint(p)
        if hint:
            raise UserError(hint) from e
        raise UserError(f"{p} is truncated or not a PyTorch checkpoint ({quote(e)}); "
                        f"re-download or re-save it") from e
    check_is_state_dict(sd, p)
    return dict(sd)


def check_is_state_dict(sd, p: Path) -> None:
    if not isinstance(sd, dict):
        raise UserError(f"{p} holds a {type(sd).__name__}, not a state dict; "
                        f"expected a dict of name -> tensor (an official RWKV .pth)")
    if "_strategy" in sd:
        raise UserError(f"{p} was pre-converted by the rwkv pip package (it has '_strategy'); "
                        f"use the original .pth instead")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        names = ", ".join(repr(k) for k in bad[:3])
        raise UserError(f"{p} is not a plain state dict: entries {names} are not tensors; "
                        f"expected a dict of name -> tensor (an official RWKV .pth)")


def owned(sd: dict, dtype: torch.dtype | None) -> dict:
    """Contiguous, owned CPU tensors in official order (`dtype` None keeps each dtype).
    clone(): no tensor may be a view into another's storage (safetensors and the Rust .st
    converter read by offset)."""
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"cannot write: entries {bad[:3]} are not tensors")
    return {k: sd[k].detach().to(device="cpu", dtype=sd[k].dtype if dtype is None else dtype)
            .contiguous().clone() for k in official_order(sd)}


def official_order(sd) -> list[str]:
    """emb first, then layer by layer (the source's order inside a layer), ln_out, head last.

    RWKV Runner's v7 detector needs layer 0's ln_x before layer 1's r_k (spec §2.1)."""
    def rank(item):
        i, k = item
        if k.startswith("emb."):
            return (0, 0, i)
        if k.startswith("blocks.") and k.split(".")[1].isdigit():
            return (1, int(k.split(".")[1]), i)
        if k.startswith("head."):
            return (3, 0, i)
        return (2, 0, i)
    return [k for _, k in sorted(enumerate(sd), key=rank)]


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`, or one UserError (missing, not JSON, not an object)."""
    if not path.is_file():
        raise UserError(f"{path} is missing; {what} needs it")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); restore or re-export it") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a JSON {type(obj).__name__}, not an object; restore or re-export it")
    return obj


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def stats(sd: dict) -> dict:
    return {"tensors": len(sd), "parameters": sum(t.numel() for t in sd.values()),
            "dtypes": sorted({str(t.dtype).replace("torch.", "") for t in sd.values()})}
