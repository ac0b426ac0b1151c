"""Official RWKV `.pth` (torch.save of {name: tensor}): what the `rwkv` pip package, RWKV Runner
and RWKV-LM load. Read with weights_only (no pickle code runs), written atomically in official
key order (Runner's v7 detector needs it)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..utils import atomic_path
from .common import load_pth, owned
from .registry import Format, register

SUFFIXES = (".pth", ".pt", ".bin")


def recognise(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES


def write(sd: dict, path: Path, dtype: torch.dtype | None) -> Path:
    out = owned(sd, dtype)
    with atomic_path(path) as tmp:
        torch.save(out, tmp)
    return path


FORMAT = register(Format(name="pth", kind="model", what="official RWKV checkpoint (.pth)",
                         recognise=recognise, read=lambda p: load_pth(Path(p)), write=write))
