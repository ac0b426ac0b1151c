"""`rwkvft inspect PATH`: what a checkpoint, adapter, state, Ai00 or Hugging Face file is.

Models (official .pth / .safetensors, Ai00 .st, HF RWKV-7 folders) print their architecture;
adapters (ours, RWKV-PEFT's, HF peft folders, Ai00 LoRA files) their method and sizes; state
files their layers and heads. `rwkvft.formats.identify` (the format registry) tells the kinds apart.
"""
from __future__ import annotations

import argparse
import json

from ..models.schema import VERSION_LABELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model, adapter or state file (.pth, .safetensors, .st, .state) "
                                      "or a Hugging Face model / HF peft adapter folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _text(info: dict) -> str:
    lines = [f"version      {info['version']} ({VERSION_LABELS.get(info['version'], '?')})",
             f"layers       {info['n_layer']}",
             f"n_embd       {info['n_embd']}",
             f"heads        {info['n_head']} x head size {info['head_size']}",
             f"vocab        {info['vocab_size']}",
             f"ffn          {info['dim_ffn']}"]
    if info["version"] == "x070":
        lines.append(f"lora dims    decay {info['d_decay']}, a {info['d_aaa']}, "
                     f"v {info['d_mv']}, gate {info['d_gate']}")
        lines.append(f"layer-0 v0   {'present' if info['layer0_v'] else 'absent'}")
    elif info["version"] == "x060":
        lines.append(f"lora dims    decay {info['d_decay']}, mix {info['d_mix']}")
    lines += [f"parameters   {info['parameters']:,} ({info['parameters'] / 1e6:.2f}M)",
              f"tensors      {info['tensors']}",
              f"dtype        {', '.join(info['dtypes'])}"]
    return "\n".join(lines)


_MODEL_KINDS = {"model": "RWKV model", "ai00 model": "Ai00 / web-rwkv model",
                "hf model": "Hugging Face RWKV-7 model folder"}


def _kind_text(info: dict) -> str:
    if info["kind"] in _MODEL_KINDS:
        return f"kind         {_MODEL_KINDS[info['kind']]} ({info['format']})\n" + _text(info)
    lines = [f"kind         {info['kind']} ({info['format']})"]
    for k, v in info.items():
        if k in ("kind", "format"):
            continue
        if isinstance(v, list):
            v = ", ".join(str(x) for x in v) or "none"
        elif isinstance(v, int) and k == "parameters":
            v = f"{v:,}"
        lines.append(f"{k.replace('_', ' '):<12} {v}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..formats import identify
    info = identify(args.model)
    if args.json:
        if info["kind"] == "model":   # plain models keep the original JSON fields
            info = {k: v for k, v in info.items() if k not in ("kind", "format")}
        print(json.dumps(info))
    else:
        print(_kind_text(info))
    return 0
