"""`rwkvft init`: write a freshly initialised RWKV-7 checkpoint (rwkvft.new_model does it): the
official init with small att.output / ffn.value weights so every method trains (models/init.py),
or with --official the exact official init."""
from __future__ import annotations

import argparse
from pathlib import Path


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
    from ..new_model import write_new_model
    from .output_guard import writing_output
    with writing_output(Path(args.out)):  # stale temps of a killed init go; a full disk is one line
        print(write_new_model(args.out, args.n_layer, args.n_embd, args.vocab_size, args.head_size,
                              seed=args.seed, force=args.force, official=args.official))
    return 0
