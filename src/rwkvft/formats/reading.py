"""The registry's entry points: read a model, an adapter or a state of any registered format,
write a model, and load a model file as a module. Everyone (--load_model, merge, export,
inspect, --adapter_init, generate, eval) calls these; no caller picks a format module by name.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..adapters import registry as methods
from ..adapters.fingerprint import check_fingerprint
from ..errors import UserError
from ..models.build import model_from_state_dict
from ..models.time_state import check_time_states
from ..utils import require_file
from . import registry
from .state_common import check_meta


def read_model(path) -> dict[str, torch.Tensor]:
    """Any model file or folder (official .pth / .safetensors, Ai00 .st, HF folders) -> the
    official state dict (plain CPU tensors); every bad file raises UserError."""
    p = Path(path)
    fmt = registry.reader_of(p, "model")
    if fmt is None:
        require_file(p, "checkpoint")
        fmt = registry.get("pth")    # any other suffix: try torch.load (weights only)
    sd = fmt.read(p)
    if "emb.weight" not in sd:
        refuse_adapter_or_state(sd, p)
    return sd


def refuse_adapter_or_state(sd: dict, p: Path) -> None:
    """An adapter or a state file given where a model belongs: say what it is and where it goes
    (else the schema's "unknown architecture" follows)."""
    from ..models.time_state import is_time_state_key
    if sd and all(is_time_state_key(k) for k in sd):
        raise UserError(f"{p} is a state file, not a model: give the base model here and the "
                        f"state with --state {p} (generate, eval)")
    suffixes = methods.all_suffixes()
    if any(k.rpartition(".")[2] in suffixes for k in sd) or (p.parent / "adapter_config.json").is_file():
        raise UserError(f"{p} is an adapter, not a model: give the base model here and the adapter "
                        f"with --adapter {p} (generate, eval; --adapter_init to train on from it), "
                        f"or merge it first: rwkvft merge --base BASE --adapter {p} --output merged.pth")


def load_model(path, device="cpu", dtype=None, op: str = "chunked", grad_cp: bool = False):
    """A model file of any format as an eval-mode nn.Module in `dtype` (fp32 default)."""
    return model_from_state_dict(read_model(path), device=device, dtype=dtype, op=op, grad_cp=grad_cp)


def write_state_dict(sd: dict, path, dtype: torch.dtype | None = torch.bfloat16):
    """Write `sd` atomically in the official layout, `dtype` (None keeps each tensor's);
    a `.safetensors` / `.st` suffix writes official safetensors, anything else a .pth."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output path {path} is a directory; give a file name such as {path}/model.pth")
    fmt = "safetensors" if path.suffix.lower() in (".safetensors", ".st") else "pth"
    return registry.get(fmt).write(sd, path, dtype)


def write_model(sd: dict, path, fmt: str, dtype: torch.dtype | None):
    """Write a model in the registered model format `fmt` (pth, safetensors, st)."""
    return registry.get(fmt).write(sd, Path(path), dtype)


def read_adapter(path) -> tuple[dict, dict]:
    """(tensors in our names, config dict) of any adapter: ours, RWKV-PEFT's, HF peft folders."""
    p = Path(path)
    fmt = registry.reader_of(p, "adapter")
    if fmt is None:
        if p.is_dir():
            from ..foreign_json import hf_peft_config
            hf_peft_config(p)   # names the folder: no adapter_config.json, or an HF model folder
            raise UserError(f"{p} is a folder but no adapter: an HF peft adapter folder holds "
                            f"adapter_config.json and adapter_model.safetensors (and no config.json)")
        require_file(p, "adapter")
    return fmt.read(p)


def read_state(path, cfg) -> dict:
    """Any state file -> {blocks.i.att.time_state: (H,N,N) fp32, our [value, key] layout},
    checked against model config `cfg` (one-line UserError for another size/layers/version).
    `.state`: Ai00. `.pth`/`.pt`: RWKV Runner / RWKV-PEFT, or an rwkvft state adapter
    (adapter_config.json beside it); `.safetensors`: an rwkvft state adapter."""
    p = require_file(path, "state file")
    fmt = registry.reader_of(p, "state")
    if fmt is None:
        raise UserError(f"cannot tell the format of state file {p}: use a Runner/RWKV-PEFT .pth, "
                        f"an Ai00 .state or an rwkvft adapter rwkv-N.pth")
    states, meta = fmt.read(p)
    check_meta(meta, cfg, p)
    check_time_states(states, cfg, f"state file {p}")
    return states


def with_alpha(config: dict, lora_alpha: float | None) -> dict:
    """The adapter config with `--lora_alpha` applied: one range check for merge and export,
    and only for a method that declares an alpha option."""
    if lora_alpha is None:
        return config
    # the flag's range first (whatever the adapter), then whether the method takes an alpha
    if not (isinstance(lora_alpha, (int, float)) and math.isfinite(lora_alpha) and lora_alpha > 0):
        raise UserError(f"--lora_alpha must be a positive number, got {lora_alpha:g}; "
                        f"pass the lora_alpha used for training")
    method = methods.get(config.get("method"))
    if method.alpha_key is None:
        raise UserError(f"--lora_alpha applies to LoRA adapters only; this one is "
                        f"{config.get('method')}: drop the flag")
    return dict(config, **{method.alpha_key: float(lora_alpha)})


def load_inputs(base, adapter, lora_alpha: float | None = None):
    """(base state dict, adapter tensors, adapter config) with --lora_alpha applied and the
    adapter's base fingerprint checked."""
    base_sd = read_model(base)
    adapter_sd, config = read_adapter(adapter)
    config = with_alpha(config, lora_alpha)
    check_fingerprint(config.get("base"), base_sd)
    return base_sd, adapter_sd, config
