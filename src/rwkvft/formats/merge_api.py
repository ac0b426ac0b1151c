"""`rwkvft.merge`: base + adapter -> a merged model file (.pth, .safetensors, Ai00 .st).

Reads every adapter format (ours, RWKV-PEFT's, HF peft folders) and every model format; the
maths is rwkvft.adapters.merge; the writer is the model format's. The base is never overwritten.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..adapters import registry as methods
from ..adapters.fingerprint import check_fingerprint
from ..adapters.merge import merge_state_dict
from ..errors import UserError
from ..models.schema import infer_config
from ..utils import require_file, same_file
from .reading import load_inputs, read_adapter, with_alpha, write_model

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_SUFFIX_FORMAT = {".pth": "pth", ".safetensors": "safetensors", ".st": "st"}
MODEL_FORMATS = ("pth", "safetensors", "st")


def merge_adapter_file(base_sd: dict, adapter_path, lora_alpha: float | None = None):
    """Read an adapter (any format), check it fits `base_sd`, return (merged, config, adapter_sd)."""
    adapter_sd, config = read_adapter(adapter_path)
    config = with_alpha(config, lora_alpha)
    check_fingerprint(config.get("base"), base_sd)
    return merge_state_dict(base_sd, adapter_sd, config), config, adapter_sd


def resolve_format(out: Path, fmt: str | None) -> str:
    by_suffix = _SUFFIX_FORMAT.get(out.suffix.lower())
    if fmt is None:
        if by_suffix is None:
            raise UserError(f"cannot tell the format of {out} from its suffix; "
                            f"name it .pth, .safetensors or .st, or pass --format")
        return by_suffix
    if fmt == "pth" and by_suffix != "pth":
        raise UserError(f"--format pth needs an output name ending in .pth (the rwkv package "
                        f"appends .pth itself), got {out.name}")
    if fmt in ("safetensors", "st") and by_suffix not in ("safetensors", "st"):
        raise UserError(f"--format {fmt} needs an output name ending in .safetensors or .st, got {out.name}")
    return fmt


def _check_paths(base: Path, adapter: Path, out: Path, force: bool) -> None:
    # folders: a Hugging Face RWKV-7 model (base) or an HF peft adapter (RWKV-PEFT --merge 0)
    if not base.is_dir():
        require_file(base, "base model")
    if not adapter.is_dir():
        require_file(adapter, "adapter")
    if same_file(base, out):
        raise UserError(f"--output {out} is the base model itself; write the merged model to "
                        f"another path (rwkvft never overwrites the base)")
    if same_file(adapter, out):
        raise UserError(f"--output {out} is the adapter file; choose another output path")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to replace it or choose another path")


def merge(base, adapter, output, fmt: str | None = None, dtype: str | None = None,
          lora_alpha: float | None = None, force: bool = False) -> str:
    """Merge `adapter` into `base` and write `output`; returns the line to print."""
    base, adapter, out = Path(base), Path(adapter), Path(output)
    _check_paths(base, adapter, out, force)
    fmt = resolve_format(out, fmt)
    if fmt == "st" and dtype not in (None, "fp16"):
        raise UserError(f"--format st is always fp16 (Ai00 requires it); drop --dtype {dtype} "
                        f"or use --format pth")
    base_sd, adapter_sd, config = load_inputs(base, adapter, lora_alpha)
    method = methods.get(config.get("method"))
    merged = merge_state_dict(base_sd, adapter_sd, config)
    if method.check_merged is not None:   # e.g. a state: RWKV-6/5 model files only
        method.check_merged(infer_config(merged).version)
    dtype = dtype or ("fp16" if fmt == "st" else "bf16")
    write_model(merged, out, fmt, DTYPES[dtype])
    n = len({k.rpartition(".")[0] for k in adapter_sd if k.rpartition(".")[2] in method.suffixes})
    return (f"merged {method.describe(config)} adapter ({n} layers, {len(adapter_sd)} tensors) "
            f"into {out} ({fmt}, {dtype})")
