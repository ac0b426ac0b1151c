"""`rwkvft generate`: sample text from a model, streamed to stdout.

The prompt goes through the model in one parallel pass; each new token then costs one RNN step
through the carried state (no re-reading of the prompt).
"""
from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from ..generation import stream_tokens


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint (.pth or .safetensors)")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max_new_tokens", "--max_tokens", dest="max_tokens", type=int, default=100,
                        help="tokens to generate at most (--max_tokens is its older name; train's --max_tokens is a training budget)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top_p", type=float, default=0.85, help="nucleus sampling mass, in (0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed; same seed, same text")
    parser.add_argument("--op", default="chunked", help="WKV op: chunked (CPU) or reference")
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


def _check(args) -> None:
    from ..config import check_ranges
    check_ranges(vars(args), _ranges())
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError as e:  # argv bytes that are not UTF-8 arrive as lone surrogates
        raise UserError(f"--prompt is not valid UTF-8 text (a byte that is not UTF-8 at "
                        f"character {e.start}); pass the prompt in UTF-8") from None


def _load(model_path, adapter_path, lora_alpha):
    from ..formats import load_model
    from ..models import model_from_state_dict
    if adapter_path is None:
        return load_model(model_path)
    from ..formats import merge_adapter_file, read_state_dict
    merged, _, _ = merge_adapter_file(read_state_dict(model_path), adapter_path, lora_alpha)
    return model_from_state_dict(merged)


def run(args: argparse.Namespace) -> int:
    _check(args)
    from ..data.tokenizer import WorldTokenizer
    tokenizer = WorldTokenizer()
    model = _load(args.model, args.adapter, args.lora_alpha)
    if args.state:
        from .. import set_state
        set_state(model, args.state)
    model.set_runtime(op=args.op)
    if model.config.vocab_size != tokenizer.vocab_size:
        raise UserError(f"generate needs a World-vocabulary model (vocab {tokenizer.vocab_size}); "
                        f"{args.model} has vocab {model.config.vocab_size}")
    # an empty prompt starts from the end-of-document token, as a fresh document would
    prompt_ids = tokenizer.encode(args.prompt) or [0]
    decoder = tokenizer.stream_decoder()
    for token, _ in stream_tokens(model, prompt_ids, args.max_tokens, args.temperature,
                                  args.top_p, args.seed):
        sys.stdout.write(decoder.push(token))
        sys.stdout.flush()
    sys.stdout.write(decoder.flush() + "\n")
    sys.stdout.flush()
    return 0
