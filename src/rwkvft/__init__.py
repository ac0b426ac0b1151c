"""rwkvft: parameter-efficient fine-tuning for RWKV language models."""
from __future__ import annotations

__version__ = "0.1.0"


def load_model(path, device="cpu", dtype=None, state=None):
    """Load an official RWKV checkpoint (.pth or .safetensors) as a plain nn.Module.

    `dtype` defaults to torch.float32. `model(idx)` returns logits (B, T, V). `state`: a state
    file (see set_state) every sequence called without a state then starts from.
    """
    from .formats import load_model as _load
    model = _load(path, device=device, dtype=dtype)
    if state is not None:
        set_state(model, state)
    return model


def set_state(model, state):
    """Make `model(idx)` (no state passed) start from `state`: a state file (state adapter
    rwkv-N.pth, RWKV Runner / RWKV-PEFT .pth, Ai00 .state) or a dict
    {"blocks.{i}.att.time_state": (H, N, N) [value, key]}; None goes back to zeros.
    Returns the model."""
    from .models.time_state import set_time_state
    if state is None:
        for block in model.blocks:
            block.att.time_state = None
        return model
    if not isinstance(state, dict):
        from .formats import read_state
        state = read_state(state, model.config)
    set_time_state(model, state)
    return model


__all__ = ["load_model", "set_state", "__version__"]
