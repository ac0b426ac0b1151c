"""`rwkvft generate`: sample text from a model, streamed to stdout (rwkvft.generate does it)."""
from __future__ import annotations

import argparse
import sys



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint (.pth or .safetensors)")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max_new_tokens", "--max_tokens", dest="max_tokens", type=int, default=100,
                        help="tokens to generate at most (--max_tokens is its older name; "
                             "train's --max_tokens is a training budget)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top_p", type=float, default=0.85, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed; same seed, same text")
    parser.add_argument("--op", default="chunked", help="WKV op: chunked (CPU) or reference; cuda/fla on GPU")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--adapter", default=None,
                        help="adapter file (rwkv-N.pth from training) merged in memory first")
    parser.add_argument("--state", default=None, metavar="FILE",
                        help="initial state to start from: a state adapter rwkv-N.pth, an RWKV "
                             "Runner / RWKV-PEFT state .pth or an Ai00 .state")
    parser.add_argument("--lora_alpha", type=float, default=None,
                        help="alpha for RWKV-PEFT LoRA adapter files (ours record it)")


def _ranges():
    from ..config import Range
    return {"max_tokens": Range(0), "temperature": Range(0, hint="0 means greedy"),
            "top_p": Range(0, 1, lo_open=True, hint="0.85 is a good default"),
            "seed": Range(0, 2**63 - 1)}


def run(args: argparse.Namespace) -> int:
    from ..config import check_ranges
    from ..generation import check_prompt, generate
    check_ranges(vars(args), _ranges())
    check_prompt(args.prompt)
    generate(args.model, args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
             top_p=args.top_p, seed=args.seed, adapter=args.adapter, state=args.state,
             lora_alpha=args.lora_alpha, op=args.op, device=args.device,
             out=sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0
