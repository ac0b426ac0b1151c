"""`rwkvft merge`: base .pth + adapter -> merged official checkpoint (.pth, .safetensors, Ai00 .st).

Reads our adapter files (adapter_config.json beside them) and RWKV-PEFT's (.disha / .bone /
.lora_A+.lora_B / full tensors, optional "model." prefix). The base is never overwritten.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..errors import UserError
from ..utils import atomic_path, require_file, same_file

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_SUFFIX_FORMAT = {".pth": "pth", ".safetensors": "safetensors", ".st": "st"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="the base model .pth the adapter was trained on")
    p.add_argument("--adapter", required=True,
                   help="adapter file (rwkv-N.pth from rwkvft or RWKV-PEFT; .safetensors too) or an HF peft "
                        "adapter folder (RWKV-PEFT's {proj_dir}-adapter, rwkvft export --format hf-peft)")
    p.add_argument("--output", required=True, help="merged model path (.pth, .safetensors or .st)")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                   help="dtype of the written tensors (default bf16; the st format is always fp16)")
    p.add_argument("--format", choices=["pth", "safetensors", "st"], default=None,
                   help="pth (official, default for .pth), safetensors (official keys), or st "
                        "(Ai00 / web-rwkv ready: lower-case keys, fp16, transposed LoRA matrices); "
                        "default: from the output suffix")
    p.add_argument("--lora_alpha", type=float, default=None,
                   help="LoRA alpha (required for RWKV-PEFT LoRA files; overrides adapter_config.json)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")


def _resolve_format(out: Path, fmt: str | None) -> str:
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


def _check_paths(args) -> tuple[Path, Path, Path]:
    # folders: a Hugging Face RWKV-7 model (base) or an HF peft adapter (RWKV-PEFT --merge 0)
    base = Path(args.base) if Path(args.base).is_dir() else require_file(args.base, "base model")
    adapter = Path(args.adapter) if Path(args.adapter).is_dir() else require_file(args.adapter, "adapter")
    out = Path(args.output)
    if same_file(base, out):
        raise UserError(f"--output {out} is the base model itself; write the merged model to "
                        f"another path (rwkvft never overwrites the base)")
    if same_file(adapter, out):
        raise UserError(f"--output {out} is the adapter file; choose another output path")
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists; pass --force to replace it or choose another path")
    return base, adapter, out


def _write(sd: dict, out: Path, fmt: str, dtype_name: str | None) -> str:
    from ..checkpoint.rwkv_format import write_state_dict
    if fmt != "st":
        dtype_name = dtype_name or "bf16"
        write_state_dict(sd, out, dtype=_DTYPES[dtype_name])
        return dtype_name
    if dtype_name not in (None, "fp16"):
        raise UserError(f"--format st is always fp16 (Ai00 requires it); drop --dtype {dtype_name} "
                        f"or use --format pth")
    from safetensors.torch import save_file

    from ..checkpoint.merge import ai00_state_dict
    tensors = ai00_state_dict(sd)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return "fp16"


def run(args: argparse.Namespace) -> int:
    from ..checkpoint.merge import merge_adapter_file
    from ..checkpoint.rwkv_format import read_state_dict

    base, adapter, out = _check_paths(args)
    fmt = _resolve_format(out, args.format)
    merged, config, adapter_sd = merge_adapter_file(read_state_dict(base), adapter, args.lora_alpha)
    if config.get("method") == "state":  # RWKV-6/5 only: the rwkv package reads it there
        from ..checkpoint.rwkv_format import infer_config
        from ..checkpoint.state_export import refuse_baked_x070
        refuse_baked_x070(infer_config(merged).version)
    from .output_guard import writing_output
    with writing_output(out):  # stale temps of a killed merge go; a full disk is one line
        dtype_name = _write(merged, out, fmt, args.dtype)
    from ..adapters import registry
    suffixes = registry.get(config["method"]).suffixes
    n = len({k.rpartition(".")[0] for k in adapter_sd if k.rpartition(".")[2] in suffixes})
    mode = f" {config['mode']}" if config.get("mode") and config["method"] == "miss" else ""
    print(f"merged {config.get('method')}{mode} adapter ({n} layers, {len(adapter_sd)} tensors) "
          f"into {out} ({fmt}, {dtype_name})")
    return 0
