"""Model construction: build from a ModelConfig, or from an official state dict (reading files
is rwkvft.formats: formats.load_model)."""
from __future__ import annotations

import torch

from ..errors import UserError
from .rwkv6 import RWKV6
from .rwkv7 import RWKV7
from .schema import VERSION_LABELS, ModelConfig, infer_config, official_shapes
from .time_state import is_time_state_key, set_time_state

_MODEL_CLASSES = {"x070": RWKV7, "x060": RWKV6, "x052": RWKV6}


def build_model(cfg: ModelConfig, op: str = "chunked", grad_cp: bool = False):
    """An uninitialised model for `cfg` (load a state dict into it; see models.init for fresh
    weights). Dispatches on cfg.version; `op` / `grad_cp` as in RWKV7.set_runtime."""
    cls = _MODEL_CLASSES.get(cfg.version)
    if cls is None:
        raise UserError(f"unknown model version {cfg.version!r}; rwkvft runs x070 (RWKV-7), "
                        f"x060 (RWKV-6) and x052 (RWKV-5.2) models")
    return cls(cfg, op=op, grad_cp=grad_cp)


def model_from_state_dict(sd, device="cpu", dtype=None, op: str = "chunked", grad_cp: bool = False):
    """An eval-mode model holding the official state dict `sd`, in `dtype` (fp32 default)."""
    cfg = infer_config(sd)
    # a baked initial state (RWKV-PEFT merge_state, our merge of a state adapter) is kept
    states = {k: t for k, t in sd.items() if is_time_state_key(k)}
    sd = {k: t for k, t in sd.items() if k not in states}
    _refuse_extra_keys(sd, cfg)
    with torch.device("meta"):  # no throw-away random init: the file's tensors are assigned
        model = build_model(cfg, op=op, grad_cp=grad_cp)
    model.load_state_dict(to_module_shapes(sd, cfg), strict=True, assign=True)
    if states:
        set_time_state(model, states)
    return model.to(device=device, dtype=torch.float32 if dtype is None else dtype).eval()


def _refuse_extra_keys(sd, cfg: ModelConfig) -> None:
    official = official_shapes(cfg)
    extra = [k for k in sd if k not in official]
    if extra:
        label = VERSION_LABELS[cfg.version]
        raise UserError(f"checkpoint has {len(extra)} tensor(s) an {label} model does not "
                        f"use, e.g. {', '.join(extra[:3])}; remove them (or merge adapters first "
                        f"with rwkvft merge)")


def to_module_shapes(sd, cfg: ModelConfig):
    """Reshape flat (C,) vectors and per-head tensors (r_k, time_faaaa) to the module's
    (official) shapes: (1,1,C) and (H,N)."""
    shapes = official_shapes(cfg)
    out = {}
    for k, t in sd.items():
        want = shapes.get(k)
        if want is not None and t.dim() == 1 and len(want) > 1 and t.numel() == cfg.n_embd:
            t = t.view(want)
        out[k] = t
    return out
