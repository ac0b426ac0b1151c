"""`rwkvft bench`: training tokens/s, peak memory and MFU on random weights of a named size."""
from __future__ import annotations

import dataclasses


def add_arguments(parser) -> None:
    from ..adapters import registry
    from ..bench import SIZES, BenchConfig

    helps = {
        "size": f"random RWKV-7 weights of this size: {', '.join(SIZES)} (tiny = L2 C128, for CPU)",
        "model": "benchmark this checkpoint instead of random weights",
        "version": "random weights of this version: x070 (RWKV-7), x060 (RWKV-6) or x052",
        "vocab_size": "vocabulary of the random model",
        "ctx_len": "tokens per sample", "micro_bsz": "samples per step",
        "steps": "timed optimizer steps", "warmup": "untimed steps first (builds, autotune)",
        "accelerator": "auto, cpu or gpu", "op": "WKV op: auto, cuda, fla, triton, chunked, reference",
        "precision": "fp32, tf32 or bf16 (default: bf16 on GPU, fp32 on CPU)",
        "quant": "frozen base weights: none, int8 or nf4 (bitsandbytes)",
        "grad_cp": "1 = activation checkpointing per block",
        "compile": "1 = torch.compile (inductor) each block; the warm-up steps compile (time printed)",
        "peft": ", ".join(registry.names()), "peft_config": "method options as JSON, e.g. '{\"r\":64}'",
        "train_type": "none, or infctx: each sample in chunks of --chunk_ctx tokens carrying the state",
        "chunk_ctx": "infctx chunk length (< ctx_len, a multiple of 16)",
        "infctx_bptt": "infctx gradients: full (exact) or truncated (state detached per chunk)",
        "head_chunk": "tokens per head + cross-entropy chunk", "lr": "AdamW learning rate",
        "seed": "seed for weights and data",
        "lengths": "padded-batch workload: lognormal:median=M,max=X[,sigma=S] (chat-like sample lengths) or "
                   "a data file cut as `train --dataload pad` cuts it; tokens/s then counts real tokens only",
        "batching": "with --lengths: ctx (pad every batch to ctx_len), dynamic (to its longest sample) or "
                    "grouped (dynamic + --group_by_length)",
    }
    for f in dataclasses.fields(BenchConfig):
        parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default, help=helps.get(f.name, ""))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args) -> int:
    from ..bench import BenchConfig, format_result, run_bench, to_json

    cfg = BenchConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig)})
    result = run_bench(cfg)
    print(to_json(result) if args.json else format_result(result))
    return 0
