"""The one function that assembles a model to run: base checkpoint + adapter (merged in memory)
+ initial state. `rwkvft.load_model`, `rwkvft generate`, `rwkvft eval` (and the Python API) all
come through here; files are read through rwkvft.formats (any registered model, adapter and
state format)."""
from __future__ import annotations


def assemble_model(model, adapter=None, state=None, lora_alpha: float | None = None,
                   device="cpu", dtype=None, op: str = "chunked"):
    """An eval-mode model: `model` is a checkpoint path or an official state dict; `adapter` an
    adapter file (ours or RWKV-PEFT's; merged in memory after its base fingerprint is checked);
    `state` an initial-state file or dict (see set_state); `lora_alpha` for RWKV-PEFT LoRA files
    that do not record it. dtype defaults to float32."""
    from .formats import read_model
    from .models.build import model_from_state_dict

    base_sd = read_model(model) if not isinstance(model, dict) else model
    if adapter is not None:
        from .formats import merge_adapter_file
        base_sd, _, _ = merge_adapter_file(base_sd, adapter, lora_alpha)
    net = model_from_state_dict(base_sd, dtype=dtype, op=op)
    if state is not None:
        set_state(net, state)
    return net.to(device)


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
