"""`rwkvft export`: parse the flags and call `rwkvft.formats.export` (base + adapter -> a file or
folder another runtime loads: Ai00 LoRA, Hugging Face model folder, HF-peft adapter folder,
RWKV Runner / Ai00 state files). The formats are the registry's export targets."""
from __future__ import annotations

import argparse


def _targets():
    from ..formats import registry
    return registry.export_targets()


def add_arguments(p: argparse.ArgumentParser) -> None:
    targets = _targets()
    p.add_argument("--base", required=True, help="the base model the adapter was trained on")
    p.add_argument("--adapter", required=True,
                   help="adapter: rwkv-N.pth / .safetensors (rwkvft or RWKV-PEFT) or an HF-peft folder")
    p.add_argument("--format", required=True, choices=sorted(f.name for f in targets),
                   help="; ".join(f"{f.name}: {f.what}" for f in targets))
    p.add_argument("--output", "--out", dest="output", required=True, help="file (ai00-lora: .st, runner-state: .pth, "
                   "ai00-state: .state) or folder (hf, hf-peft) to write")
    p.add_argument("--lora_alpha", type=float, default=None,
                   help="LoRA alpha (required for RWKV-PEFT LoRA files; overrides adapter_config.json)")
    p.add_argument("--layout", choices=["fla", "native"], default=None,
                   help="--format hf: fla (default; fla-hub / rwkv7-hf, trust_remote_code) or native "
                        "(transformers' Rwkv7ForCausalLM, the RWKV org's 2026 repos)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                   help="--format hf --layout native: dtype of the weights (default bf16)")
    p.add_argument("--force", "--overwrite", dest="force", action="store_true", help="replace an existing output")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..formats import export
    from .output_guard import writing_output
    with writing_output(Path(args.output)):  # stale temps of a killed export go; a full disk is one line
        lines = export(args.base, args.adapter, args.format, args.output, lora_alpha=args.lora_alpha,
                       force=args.force, layout=args.layout, dtype=args.dtype)
    for line in lines:
        print(line)
    return 0
