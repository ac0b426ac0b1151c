"""Official RWKV checkpoint files: read and write (file I/O only).

A checkpoint is a flat dict `name -> tensor` (spec rwkv_arch.md §2). We read it as data only
(`weights_only=True`) and write it back in the layout the `rwkv` pip package, RWKV Runner and
Ai00 accept (§8.4). What the tensors mean (versions, shapes, infer_config) is the schema in
rwkvft.models.schema.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch

from ..errors import UserError, quote
# The schema (infer_config, shape tables, size checks) lives in rwkvft.models.schema; these
# names are re-exported for callers of the old path.
from ..models.schema import (check_against, check_tensors, detect_version, infer_config,  # noqa: F401
                             is_vector_key, normalize_version, official_shapes, x052_shapes,
                             x060_shapes, x070_shapes)
from ..utils import atomic_path, require_file

SAFETENSORS_SUFFIXES = (".safetensors", ".st")
# ---------------------------------------------------------------------------------------------
# reading

def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Load a checkpoint as a plain dict of CPU tensors; every bad file raises UserError.
    A folder with config.json is read as a Hugging Face RWKV-7 model folder (official names)."""
    if Path(path).is_dir() and (Path(path) / "config.json").exists():
        from .hf_export import read_hf_folder
        return read_hf_folder(path)
    p = require_file(path, "checkpoint")
    if p.suffix.lower() in SAFETENSORS_SUFFIXES:
        sd = _load_safetensors(p)
    else:
        sd = _load_pth(p)
    _check_is_state_dict(sd, p)
    return dict(sd)


def _load_safetensors(p: Path):
    from safetensors.torch import load_file
    try:
        sd = load_file(str(p), device="cpu")
    except Exception as e:  # safetensors raises its own error type for any malformed header/data
        raise UserError(f"{p} is not a readable safetensors file ({_short(e)}); "
                        f"re-download or re-export it") from e
    # safetensors stores keys sorted by name: put them back in layer order
    return {k: sd[k] for k in _official_order(sd)}


def _load_pth(p: Path):
    # mmap needs the zip container; old pickle-only files (torch < 1.6) load without it
    mmap = zipfile.is_zipfile(p)
    try:
        return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        text = str(e)
        found = re.search(r"GLOBAL (\S+)", text)
        if found:
            raise UserError(f"{p} contains Python objects ({found.group(1)}) that need code to load; "
                            f"rwkvft only loads plain tensor dicts: re-save it as "
                            f"torch.save({{name: tensor}}) from a trusted environment") from e
        raise UserError(f"{p} is truncated or not a PyTorch checkpoint ({_short(e)}); "
                        f"re-download or re-save it") from e


def _short(e: Exception) -> str:
    return quote(e)  # the library's whole first sentence, never a mid-word cut


def _check_is_state_dict(sd, p: Path) -> None:
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


# ---------------------------------------------------------------------------------------------
# writing

def write_state_dict(sd: dict[str, torch.Tensor], path, dtype: torch.dtype | None = torch.bfloat16):
    """Write `sd` atomically in the official layout: contiguous, owned CPU tensors in `dtype`
    (None keeps each tensor's dtype). A `.safetensors`/`.st` suffix writes safetensors."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output path {path} is a directory; give a file name such as {path}/model.pth")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"cannot write {path}: entries {bad[:3]} are not tensors")
    # clone() so no tensor is a view into another's storage (the Rust .st converter reads by offset)
    out = {k: sd[k].detach().to(device="cpu", dtype=sd[k].dtype if dtype is None else dtype).contiguous().clone()
           for k in _official_order(sd)}
    with atomic_path(path) as tmp:
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors.torch import save_file
            save_file(out, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(out, tmp)
    return path


def _official_order(sd) -> list[str]:
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
