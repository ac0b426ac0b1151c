"""`--adapter_init PATH`: start training from an existing adapter instead of the method's init.

PATH is anything `read_adapter` reads: our rwkv-N.pth / .safetensors, RWKV-PEFT files, HF peft
folders (RWKV-PEFT's `--merge 0` `{proj_dir}-adapter`, `rwkvft export --format hf-peft`).
Every adapter tensor must fit the injected model (load_adapter_state checks keys and shapes),
and the count of loaded tensors is logged: RWKV-PEFT's reload silently loaded nothing (its #63).
Trainable full tensors (train_parts) the file lacks start from the base.
"""
from __future__ import annotations

import torch

from ..adapters import registry
from ..errors import UserError


def _check_same_method(acfg, config: dict, path) -> None:
    """The file's method and options must be what --peft / --peft_config ask for (each
    method's own label says which options matter, e.g. MiSS's mode; its alpha_key the alpha)."""
    method = registry.get(acfg.method)
    try:
        saved = registry.get(config.get("method"))
    except UserError:
        saved = None
    got = saved.describe(config) if saved is not None else str(config.get("method"))
    want = method.describe(acfg)
    if saved is not method or got != want:
        raise UserError(f"--adapter_init {path} is a {got} adapter but --peft/--peft_config "
                        f"ask for {want}; pass the method and mode it was trained with")
    key = method.alpha_key
    alpha = config.get(key) if key else None
    if alpha is not None and float(alpha) != getattr(acfg, key):
        raise UserError(f"--adapter_init {path} was trained with lora_alpha {alpha:g}, --peft_config "
                        f"gives {getattr(acfg, key):g}; pass \"lora_alpha\": {alpha:g} to continue it")


def load_adapter_init(model, acfg, path, base_sd) -> str:
    """Load the adapter at `path` into the injected model; returns the log line."""
    from ..adapters import load_adapter_state
    from ..adapters.fingerprint import check_fingerprint
    from ..formats import read_adapter

    sd, config = read_adapter(path)
    check_fingerprint(config.get("base"), base_sd)
    _check_same_method(acfg, config, path)
    own = registry.get(acfg.method).suffixes
    n_adapter = sum(1 for k in sd if k.rpartition(".")[2] in own)
    if not n_adapter:
        raise UserError(f"--adapter_init {path} holds no adapter matrices; point it at a trained adapter")
    params = dict(model.named_parameters())
    filled = {k: p.detach().clone() for k, p in params.items()
              if p.requires_grad and k not in sd and k.rpartition(".")[2] not in own}
    with torch.no_grad():
        load_adapter_state(model, {**filled, **sd})
    return (f"adapter_init: loaded {len(sd)} tensors ({n_adapter} adapter matrices) from {path}"
            + (f"; {len(filled)} train_parts tensors start from the base" if filled else ""))
