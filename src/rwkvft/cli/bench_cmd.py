"""`rwkvft bench`: training tokens/s, peak memory and MFU on random weights of a named size."""
from __future__ import annotations

import dataclasses


def add_arguments(parser) -> None:
    from ..adapters import registry
    from ..bench import SIZES, BenchConfig
    from ..config import FLAGS

    # flags bench shares with train take train's declared help (config/flags.py); these are its own
    helps = {
        "size": f"random RWKV-7 weights of this size: {', '.join(SIZES)} (tiny = L2 C128, for CPU)",
        "model": "benchmark this checkpoint instead of random weights",
        "vocab_size": "vocabulary of the random model",
        "ctx_len": "tokens per sample", "micro_bsz": "samples per step",
        "steps": "timed optimizer steps", "warmup": "untimed steps first (builds, autotune)",
        "precision": "fp32, tf32 or bf16 (default: bf16 on GPU, fp32 on CPU)",
        "peft": ", ".join(registry.names()), "lr": "AdamW learning rate",
        "seed": "seed for weights and data",
        "lengths": "padded-batch workload: lognormal:median=M,max=X[,sigma=S] (chat-like sample lengths) or "
                   "a data file cut as `train --dataload pad` cuts it; tokens/s then counts real tokens only",
        "batching": "with --lengths: ctx (pad every batch to ctx_len), dynamic (to its longest sample) or "
                    "grouped (dynamic + --group_by_length)",
    }
    for f in dataclasses.fields(BenchConfig):
        text = helps.get(f.name) or FLAGS[f.name].help
        parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default, help=text)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args) -> int:
    from ..bench import BenchConfig, format_result, run_bench, to_json

    cfg = BenchConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig)})
    result = run_bench(cfg)
    print(to_json(result) if args.json else format_result(result))
    return 0
