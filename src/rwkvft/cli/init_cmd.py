"""`rwkvft init`: write a freshly initialised RWKV-7 checkpoint (bf16): the official init with
small att.output / ffn.value weights so every method trains (models/init.py), or --official."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n_layer", type=int, required=True, help="number of layers (>= 2)")
    parser.add_argument("--n_embd", type=int, required=True, help="model width, a multiple of head_size")
    parser.add_argument("--vocab_size", type=int, default=65536, help="65536 = World tokenizer (default)")
    parser.add_argument("--head_size", type=int, default=64, help="head size N (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same file")
    parser.add_argument("--output", "--out", dest="out", required=True, help="output .pth (or .safetensors)")
    parser.add_argument("--force", "--overwrite", dest="force", action="store_true", help="overwrite an existing --out")
    parser.add_argument("--official", action="store_true",
                        help="the exact official init, att.output and ffn.value all zeros (state "
                             "tuning cannot train such a model; by default they get small "
                             "orthogonal weights so that every method can)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name such as {out}/rwkv-init.pth")
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    from ..formats import write_state_dict
    from ..models.init import init_state_dict, new_config
    cfg = new_config(args.n_layer, args.n_embd, args.vocab_size, args.head_size)
    sd = init_state_dict(cfg, seed=args.seed, trainable=not args.official)
    from .output_guard import writing_output
    with writing_output(out):  # stale temps of a killed init go; a full disk is one line
        write_state_dict(sd, out)
    n_params = sum(t.numel() for t in sd.values())
    print(f"wrote {out}: RWKV-7 L{cfg.n_layer} C{cfg.n_embd} V{cfg.vocab_size}, "
          f"{n_params / 1e6:.2f}M parameters, bf16, seed {args.seed}"
          f"{', official init (zero att.output / ffn.value)' if args.official else ''}")
    return 0
