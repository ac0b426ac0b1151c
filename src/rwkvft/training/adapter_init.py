"""`--adapter_init PATH`: start training from an existing adapter instead of the method's init.

PATH is anything `read_adapter` reads: our rwkv-N.pth / .safetensors, RWKV-PEFT files, HF peft
folders (RWKV-PEFT's `--merge 0` `{proj_dir}-adapter`, `rwkvft export --format hf-peft`).
Every adapter tensor must fit the injected model (load_adapter_state checks keys and shapes),
and the count of loaded tensors is logged: RWKV-PEFT's reload silently loaded nothing (its #63).
Trainable full tensors (train_parts) the file lacks start from the base.
"""
from __future__ import annotations

import torch

from ..errors import UserError

# what an adapter trains besides full tensors: matrices, and a state adapter's time_state
_ADAPTER_LOCALS = ("miss", "lora_A", "lora_B", "lora_A0", "lora_B0", "time_state")


def _describe(method, mode) -> str:
    return f"{method} {mode}" if method == "miss" else str(method)


def _check_same_method(acfg, config: dict, path) -> None:
    got = (config.get("method"), config.get("mode", "default") if config.get("method") == "miss" else "")
    want = (acfg.method, acfg.mode if acfg.method == "miss" else "")
    if got != want:
        raise UserError(f"--adapter_init {path} is a {_describe(*got)} adapter but --peft/--peft_config "
                        f"ask for {_describe(*want)}; pass the method and mode it was trained with")
    alpha = config.get("alpha")
    if acfg.method == "lora" and alpha is not None and float(alpha) != acfg.alpha:
        raise UserError(f"--adapter_init {path} was trained with lora_alpha {alpha:g}, --peft_config "
                        f"gives {acfg.alpha:g}; pass \"lora_alpha\": {alpha:g} to continue it")


def load_adapter_init(model, acfg, path, base_sd) -> str:
    """Load the adapter at `path` into the injected model; returns the log line."""
    from ..adapters import load_adapter_state
    from ..checkpoint.adapter_io import check_fingerprint, read_adapter

    sd, config = read_adapter(path)
    check_fingerprint(config.get("base"), base_sd)
    _check_same_method(acfg, config, path)
    n_adapter = sum(1 for k in sd if k.rpartition(".")[2] in _ADAPTER_LOCALS)
    if not n_adapter:
        raise UserError(f"--adapter_init {path} holds no adapter matrices; point it at a trained adapter")
    params = dict(model.named_parameters())
    filled = {k: p.detach().clone() for k, p in params.items()
              if p.requires_grad and k not in sd and k.rpartition(".")[2] not in _ADAPTER_LOCALS}
    with torch.no_grad():
        load_adapter_state(model, {**filled, **sd})
    return (f"adapter_init: loaded {len(sd)} tensors ({n_adapter} adapter matrices) from {path}"
            + (f"; {len(filled)} train_parts tensors start from the base" if filled else ""))
