"""Model construction: build from a ModelConfig, or load an official checkpoint file."""
from __future__ import annotations

from ..errors import UserError
from .config import ModelConfig

SUPPORTED_VERSIONS = ("x070",)


def build_model(cfg: ModelConfig):
    """An uninitialised model for `cfg` (load a state dict into it; see models.init for fresh
    weights). Dispatches on cfg.version."""
    if cfg.version == "x070":
        from .rwkv7 import RWKV7
        return RWKV7(cfg)
    if cfg.version == "x060":
        raise UserError("this is an RWKV-6 (x060) checkpoint; RWKV-6 support arrives later, "
                        "use an RWKV-7 (x070) model for now")
    if cfg.version == "x052":
        raise UserError("this is an RWKV-5 (x052) checkpoint; RWKV-5 is not supported yet, "
                        "use an RWKV-7 (x070) model")
    raise UserError(f"unknown model version {cfg.version!r}; rwkvft runs RWKV-7 (x070) models")


def load_model(path, device="cpu", dtype=None):
    """Load an official checkpoint (.pth / .safetensors) as an nn.Module in `dtype` (fp32 default)."""
    import torch

    from ..checkpoint import infer_config, read_state_dict
    sd = read_state_dict(path)
    cfg = infer_config(sd)
    _refuse_extra_keys(sd, cfg)
    with torch.device("meta"):  # no throw-away random init: the file's tensors are assigned
        model = build_model(cfg)
    model.load_state_dict(to_module_shapes(sd, cfg), strict=True, assign=True)
    return model.to(device=device, dtype=torch.float32 if dtype is None else dtype).eval()


def _refuse_extra_keys(sd, cfg: ModelConfig) -> None:
    from ..checkpoint.rwkv_format import x070_shapes
    if cfg.version != "x070":
        build_model(cfg)  # refuses with the version's own message
    extra = [k for k in sd if k not in x070_shapes(cfg)]
    if extra:
        raise UserError(f"checkpoint has {len(extra)} tensor(s) an RWKV-7 model does not use, e.g. "
                        f"{', '.join(extra[:3])}; remove them (or merge adapters first with rwkvft merge)")


def to_module_shapes(sd, cfg: ModelConfig):
    """Reshape (C,) vectors to (1,1,C) and a flat r_k to (H,N), the module's (official) shapes."""
    C = cfg.n_embd
    out = {}
    for k, t in sd.items():
        if k.endswith(".att.r_k") and t.dim() == 1:
            t = t.view(cfg.n_head, cfg.head_size)
        elif t.shape == (C,) and _is_module_vector(k):
            t = t.view(1, 1, C)
        out[k] = t
    return out


def _is_module_vector(key: str) -> bool:
    from ..checkpoint.rwkv_format import X070_VECTORS
    return ".att." in key and key.rsplit(".", 1)[-1] in X070_VECTORS or key.endswith(".ffn.x_k")


__all__ = ["ModelConfig", "build_model", "load_model", "to_module_shapes"]
