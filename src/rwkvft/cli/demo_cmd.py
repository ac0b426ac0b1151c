"""`rwkvft demo`: the whole workflow on CPU in a few minutes (rwkvft.demo.run_demo does it)."""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--output", "--out", dest="out", default="rwkvft-demo", help="folder for everything the demo writes")
    parser.add_argument("--n_layer", type=int, default=2, help="layers of the tiny model")
    parser.add_argument("--n_embd", type=int, default=128, help="width of the tiny model")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs")
    parser.add_argument("--epoch_steps", type=int, default=25, help="steps per epoch")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--force", "--overwrite", dest="force", action="store_true", help="replace an earlier demo in --out")


def run(args) -> int:
    from ..demo import run_demo
    return run_demo(out=args.out, n_layer=args.n_layer, n_embd=args.n_embd, epochs=args.epochs,
                    epoch_steps=args.epoch_steps, seed=args.seed, force=args.force)
