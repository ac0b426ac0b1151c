"""`rwkvft export`: base + adapter -> a file or folder another runtime loads beside (or instead
of) the base: Ai00 LoRA, Hugging Face model folder, HF-peft adapter folder, RWKV Runner / Ai00
state files (from a `--peft state` adapter).

Each format is one writer `write_X(base_sd, adapter_sd, adapter_config, output) -> list[str]`
in rwkvft.checkpoint (it writes atomically itself and returns the lines to print, e.g. what to
put in Ai00's Config.toml). The base and the adapter are never overwritten; an existing output
is replaced only with --force.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ..errors import UserError
from ..utils import require_file, same_file

# name -> (module, writer function, one-line help)
FORMATS: dict[str, tuple[str, str, str]] = {
    "ai00-lora": ("rwkvft.checkpoint.ai00_lora", "write_ai00_lora",
                  "Ai00 / web-rwkv LoRA safetensors ([[lora]] in Config.toml; MiSS default/mini, LoRA, PiSSA)"),
    "hf": ("rwkvft.checkpoint.hf_export", "write_hf",
           "Hugging Face RWKV-7 model folder (merged; fla-hub / rwkv7-hf names, tokenizer files)"),
    "hf-peft": ("rwkvft.checkpoint.hf_peft", "write_hf_peft",
                "HF peft adapter folder (MissConfig / LoraConfig) for the --format hf model of the base"),
    "runner-state": ("rwkvft.checkpoint.state_export", "write_runner_state",
                     "RWKV Runner / RWKV-PEFT state .pth (exactly n_layer blocks.N.att.time_state)"),
    "ai00-state": ("rwkvft.checkpoint.state_export", "write_ai00_state",
                   "Ai00 / web-rwkv fp16 safetensors .state (time_state, last two dims transposed)"),
}
# formats whose output is one file (the others write a folder)
FILE_FORMATS = ("ai00-lora", "runner-state", "ai00-state")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="the base model the adapter was trained on")
    p.add_argument("--adapter", required=True,
                   help="adapter: rwkv-N.pth / .safetensors (rwkvft or RWKV-PEFT) or an HF-peft folder")
    p.add_argument("--format", required=True, choices=sorted(FORMATS),
                   help="; ".join(f"{name}: {h}" for name, (_, _, h) in FORMATS.items()))
    p.add_argument("--output", required=True, help="file (ai00-lora: .st, runner-state: .pth, "
                   "ai00-state: .state) or folder (hf, hf-peft) to write")
    p.add_argument("--lora_alpha", type=float, default=None,
                   help="LoRA alpha (required for RWKV-PEFT LoRA files; overrides adapter_config.json)")
    p.add_argument("--force", action="store_true", help="replace an existing output")


def _check_paths(args) -> tuple[Path, Path, Path]:
    base, adapter = Path(args.base), Path(args.adapter)
    if not base.is_dir():
        require_file(base, "base model")
    if not adapter.is_dir():
        require_file(adapter, "adapter")
    out = Path(args.output)
    for what, p in (("the base model", base), ("the adapter", adapter)):
        if same_file(p, out) or (p.resolve().is_relative_to(out.resolve()) and out.exists()):
            raise UserError(f"--output {out} would overwrite {what}; choose another path")
    if args.format in FILE_FORMATS and out.is_dir():
        raise UserError(f"--output {out} is a directory; --format {args.format} writes a file: "
                        f"give a file name")
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists; pass --force to replace it or choose another path")
    return base, adapter, out


def load_inputs(base: Path, adapter: Path, lora_alpha: float | None):
    """(base state dict, adapter tensors, adapter config) with the base fingerprint checked."""
    from ..checkpoint.adapter_io import check_fingerprint, read_adapter
    from ..checkpoint.alpha_flag import with_lora_alpha
    from ..checkpoint.rwkv_format import read_state_dict

    base_sd = read_state_dict(base)
    adapter_sd, config = read_adapter(adapter)
    config = with_lora_alpha(config, lora_alpha)  # one check of the flag for merge and export
    check_fingerprint(config.get("base"), base_sd)
    return base_sd, adapter_sd, config


def run(args: argparse.Namespace) -> int:
    base, adapter, out = _check_paths(args)
    module, function, _ = FORMATS[args.format]
    writer = getattr(importlib.import_module(module), function)
    base_sd, adapter_sd, config = load_inputs(base, adapter, args.lora_alpha)
    if args.format == "hf":  # the exported chat_template writes what the run trained on
        from ..data.templates.jinja import run_chat_template
        config = dict(config, chat_template=run_chat_template(adapter))
    from .output_guard import writing_output
    with writing_output(out):  # stale temps of a killed export go; a full disk is one line
        lines = writer(base_sd, adapter_sd, config, out)
    for line in lines:
        print(line)
    return 0
