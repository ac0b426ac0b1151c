"""Peak live memory of one training step, infctx vs unchunked, without allocator caching.

Usage: python benchmarks/bench_infctx_live.py [T ...] [--shape L,C,V] [--meter profiler|heap]
       [--configs infctx,infctx-cp,plain,plain-cp]
       (default T 1024 4096 16384, shape 2,128,512: the tiny model; 12,768,65536 is the 0.1B shape;
       plain = unchunked, -cp = with --grad_cp 1)
Peak RSS (bench_infctx.py) also counts memory glibc keeps after it was freed. Two meters leave it
out, each measured from the start of the step (the model's weights are not in it):
  profiler  torch's CPU profiler: torch's own allocation/free events summed in time order, i.e.
            the tensors alone. Its event list grows with the step (it does not fit 23 GiB at
            0.1B, 16k tokens).
  heap      glibc's mallinfo2 (bytes in allocated heap chunks + mmapped blocks, every arena),
            sampled every 2 ms from a thread: every live malloc, tensors and autograd graph
            alike, and no event list, so any length fits. Linux/glibc only.
RWKV-7 of the given shape, MiSS default, fp32, chunked op, chunk_ctx 512, full BPTT.
"""
from __future__ import annotations

import argparse
import ctypes
import sys
import threading
import time

import torch
from torch.profiler import ProfilerActivity, profile

from rwkvft.adapters import inject, parse_peft
from rwkvft.bench import random_model
from rwkvft.training.infctx import lm_loss

# name: (chunk_ctx, grad_cp), as in bench_infctx.py
CONFIGS = {"infctx": (512, False), "infctx-cp": (512, True), "plain": (0, False), "plain-cp": (0, True)}


def _step(model, T: int, chunk_ctx: int) -> None:
    idx = torch.randint(0, model.config.vocab_size, (1, T + 1))
    mask = torch.ones(1, T)
    total, count = lm_loss(model, idx[:, :-1], idx[:, 1:], mask, 2048, chunk_ctx, "full")
    (total / count).backward()
    model.zero_grad(set_to_none=True)


def profiler_peak_mib(model, T: int, chunk_ctx: int) -> float:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(model, T, chunk_ctx)
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak / 2**20


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks",
                                                "keepcost")]


def _heap_in_use() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd


def heap_peak_mib(model, T: int, chunk_ctx: int) -> float:
    start = _heap_in_use()
    peak, done = [start], threading.Event()

    def sample():
        while not done.wait(0.002):
            peak[0] = max(peak[0], _heap_in_use())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        _step(model, T, chunk_ctx)
    finally:
        done.set()
        thread.join()
    return (peak[0] - start) / 2**20


METERS = {"profiler": profiler_peak_mib, "heap": heap_peak_mib}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lengths", nargs="*", type=int, default=[1024, 4096, 16384])
    ap.add_argument("--shape", default="2,128,512", help="n_layer,n_embd,vocab_size")
    ap.add_argument("--configs", default="infctx,plain", help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--meter", default="profiler", choices=sorted(METERS))
    args = ap.parse_args()
    n_layer, n_embd, vocab = (int(x) for x in args.shape.split(","))
    torch.manual_seed(0)
    model = random_model(n_layer, n_embd, vocab, torch.device("cpu")).train()
    model.set_runtime(op="chunked")
    inject(model, parse_peft("miss", {}), [])
    meter = METERS[args.meter]
    print(f"shape L{n_layer} C{n_embd} V{vocab}; meter {args.meter}: peak MiB of one step over "
          f"its start (x the first T)")
    print("| config | T | peak MiB | x first T | s |")
    print("|---|---|---|---|---|", flush=True)
    for name in args.configs.split(","):
        chunk_ctx, grad_cp = CONFIGS[name]
        model.set_runtime(grad_cp=grad_cp)
        first = None
        for T in args.lengths:
            t0 = time.perf_counter()
            mib = meter(model, T, chunk_ctx)
            first = first or mib
            print(f"| {name} | {T} | {mib:.1f} | {mib / first:.2f} | {time.perf_counter() - t0:.0f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
