"""`rwkvft export`: write what a runtime loads beside a base model (states, adapters, ...).

`merge` writes full models; `export` writes the side files. Each format is one writer
`write_X(base_sd, adapter_sd, adapter_config, output) -> list[str]` (lines to print) in a
module under rwkvft/checkpoint/, registered in FORMATS. The output is written atomically (the
writer goes through utils.atomic_path) and an existing one is replaced only with --force.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ..errors import UserError
from ..utils import require_file, same_file

# name -> (module, writer function, one-line help)
FORMATS: dict[str, tuple[str, str, str]] = {
    "runner-state": ("rwkvft.checkpoint.state_export", "write_runner_state",
                     "RWKV Runner / RWKV-PEFT state .pth (exactly n_layer blocks.N.att.time_state)"),
    "ai00-state": ("rwkvft.checkpoint.state_export", "write_ai00_state",
                   "Ai00 / web-rwkv fp16 safetensors .state (time_state, last two dims transposed)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="the base model .pth the adapter was trained on")
    p.add_argument("--adapter", required=True, help="adapter file (rwkv-N.pth from rwkvft train)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS),
                   help="; ".join(f"{k}: {v[2]}" for k, v in FORMATS.items()))
    p.add_argument("--output", required=True, help="file to write")
    p.add_argument("--force", action="store_true", help="replace an existing output file")


def _check_paths(args) -> tuple[Path, Path, Path]:
    base = require_file(args.base, "base model")
    adapter = require_file(args.adapter, "adapter")
    out = Path(args.output)
    for src, what in ((base, "the base model"), (adapter, "the adapter file")):
        if same_file(src, out):
            raise UserError(f"--output {out} is {what}; choose another output path")
    if out.is_dir():
        raise UserError(f"--output {out} is a directory; give a file name")
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists; pass --force to replace it or choose another path")
    return base, adapter, out


def run(args: argparse.Namespace) -> int:
    from ..checkpoint.adapter_io import read_adapter
    from ..checkpoint.rwkv_format import read_state_dict

    base, adapter, out = _check_paths(args)
    module, function, _ = FORMATS[args.format]
    writer = getattr(importlib.import_module(module), function)
    adapter_sd, config = read_adapter(adapter)
    for line in writer(read_state_dict(base), adapter_sd, config, out):
        print(line)
    return 0
