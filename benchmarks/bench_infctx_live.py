"""Peak live tensor bytes of one training step, infctx vs unchunked (torch's CPU profiler).

Usage: python benchmarks/bench_infctx_live.py [T ...] [--shape L,C,V] [--only_infctx]
       (default T 1024 4096 16384, shape 2,128,512: the tiny model; 12,768,65536 is the 0.1B shape)
Peak RSS (bench_infctx.py) also counts allocator caching, fragmentation and autograd-graph
metadata; this sums torch's own allocation/free events in time order, so it measures the tensors
alone. RWKV-7 of the given shape, MiSS default, fp32, chunked op, chunk_ctx 512, full BPTT.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from rwkvft.adapters import inject, parse_peft
from rwkvft.bench import random_model
from rwkvft.training.infctx import lm_loss


def live_peak_mib(model, T: int, chunk_ctx: int) -> float:
    idx = torch.randint(0, model.config.vocab_size, (1, T + 1))
    mask = torch.ones(1, T)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        total, count = lm_loss(model, idx[:, :-1], idx[:, 1:], mask, 2048, chunk_ctx, "full")
        (total / count).backward()
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak / 2**20


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lengths", nargs="*", type=int, default=[1024, 4096, 16384])
    ap.add_argument("--shape", default="2,128,512", help="n_layer,n_embd,vocab_size")
    ap.add_argument("--only_infctx", action="store_true", help="skip the unchunked step")
    args = ap.parse_args()
    n_layer, n_embd, vocab = (int(x) for x in args.shape.split(","))
    torch.manual_seed(0)
    model = random_model(n_layer, n_embd, vocab, torch.device("cpu")).train()
    model.set_runtime(op="chunked")
    inject(model, parse_peft("miss", {}), [])
    print(f"shape L{n_layer} C{n_embd} V{vocab}")
    print("| T | infctx 512: peak live MiB | unchunked: peak live MiB | s |")
    print("|---|---|---|---|")
    for T in args.lengths:
        t0 = time.perf_counter()
        a = live_peak_mib(model, T, 512)
        b = "not run" if args.only_infctx else f"{live_peak_mib(model, T, 0):.1f}"
        print(f"| {T} | {a:.1f} | {b} | {time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
