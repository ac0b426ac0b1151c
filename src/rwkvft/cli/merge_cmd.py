"""`rwkvft merge`: parse the flags and call `rwkvft.formats.merge` (base + adapter -> merged
official checkpoint .pth / .safetensors, or Ai00 .st). Reads every adapter format rwkvft reads
(ours, RWKV-PEFT's, HF peft folders). The base is never overwritten."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="the base model .pth the adapter was trained on")
    p.add_argument("--adapter", required=True,
                   help="adapter file (rwkv-N.pth from rwkvft or RWKV-PEFT; .safetensors too) or an HF peft "
                        "adapter folder (RWKV-PEFT's {proj_dir}-adapter, rwkvft export --format hf-peft)")
    p.add_argument("--output", "--out", dest="output", required=True, help="merged model path (.pth, .safetensors or .st)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                   help="dtype of the written tensors (default bf16; the st format is always fp16)")
    p.add_argument("--format", choices=["pth", "safetensors", "st"], default=None,
                   help="pth (official, default for .pth), safetensors (official keys), or st "
                        "(Ai00 / web-rwkv ready: lower-case keys, fp16, transposed LoRA matrices); "
                        "default: from the output suffix")
    p.add_argument("--lora_alpha", type=float, default=None,
                   help="LoRA alpha (required for RWKV-PEFT LoRA files; overrides adapter_config.json)")
    p.add_argument("--force", "--overwrite", dest="force", action="store_true", help="replace an existing output file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..formats import merge
    from .output_guard import writing_output
    with writing_output(Path(args.output)):  # stale temps of a killed merge go; a full disk is one line
        line = merge(args.base, args.adapter, args.output, fmt=args.format, dtype=args.dtype,
                     lora_alpha=args.lora_alpha, force=args.force)
    print(line)
    return 0
