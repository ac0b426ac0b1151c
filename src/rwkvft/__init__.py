"""rwkvft: parameter-efficient fine-tuning for RWKV language models."""
from __future__ import annotations

__version__ = "0.1.0"


def load_model(path, device="cpu", dtype=None):
    """Load an official RWKV checkpoint (.pth or .safetensors) as a plain nn.Module.

    `dtype` defaults to torch.float32. `model(idx)` returns logits (B, T, V).
    """
    from .models import load_model as _load
    return _load(path, device=device, dtype=dtype)


__all__ = ["load_model", "__version__"]
