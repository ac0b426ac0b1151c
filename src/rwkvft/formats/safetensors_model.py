"""Official RWKV weights as safetensors (`.safetensors`): the `.pth` names and shapes in a
safetensors container (which sorts keys: reading puts them back in official order)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..utils import atomic_path
from .common import load_safetensors, owned
from .registry import Format, register


def recognise(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".safetensors"


def write(sd: dict, path: Path, dtype: torch.dtype | None) -> Path:
    from safetensors.torch import save_file
    out = owned(sd, dtype)
    with atomic_path(path) as tmp:
        save_file(out, str(tmp), metadata={"format": "pt"})
    return path


FORMAT = register(Format(name="safetensors", kind="model", what="official RWKV weights (.safetensors)",
                         recognise=recognise, read=lambda p: load_safetensors(Path(p)), write=write))
