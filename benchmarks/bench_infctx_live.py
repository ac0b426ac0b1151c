"""Peak live tensor bytes of one training step, infctx vs unchunked (torch's CPU profiler).

Usage: python benchmarks/bench_infctx_live.py [T ...]   (default 1024 4096 16384)
Peak RSS (bench_infctx.py) also counts allocator caching, fragmentation and autograd-graph
metadata; this sums torch's own allocation/free events in time order, so it measures the tensors
alone. Tiny RWKV-7 (L2 C128, vocab 512), MiSS default, fp32, chunked op, chunk_ctx 512, full BPTT.
"""
from __future__ import annotations

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
    lengths = [int(t) for t in sys.argv[1:]] or [1024, 4096, 16384]
    torch.manual_seed(0)
    model = random_model(2, 128, 512, torch.device("cpu")).train()
    model.op = "chunked"
    inject(model, parse_peft("miss", {}), [])
    print("| T | infctx 512: peak live MiB | unchunked: peak live MiB | s |")
    print("|---|---|---|---|")
    for T in lengths:
        t0 = time.perf_counter()
        a, b = live_peak_mib(model, T, 512), live_peak_mib(model, T, 0)
        print(f"| {T} | {a:.1f} | {b:.1f} | {time.perf_counter() - t0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
