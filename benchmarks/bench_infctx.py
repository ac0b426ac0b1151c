"""Peak memory of one training step with and without infctx, as ctx_len grows.

Usage: python benchmarks/bench_infctx.py [--size 0.1b] [--vocab_size 65536] [--ctx 1024,4096,16384]
       [--chunk_ctx 512] [--configs plain-cp,infctx,infctx-cp] [--device cpu|gpu] [--floor 0]

Every (config, ctx_len) runs `rwkvft bench --steps 1 --warmup 0 --json` in a fresh process, so each
peak is its own: on CPU the process's peak RSS (model set-up included; the `floor` row is a 16-token
step, i.e. what set-up alone costs), on a GPU torch's peak allocated bytes. Configs:
  plain     unchunked, no activation checkpointing
  plain-cp  unchunked, --grad_cp 1 (the least memory a one-pass step can use)
  infctx    --train_type infctx --chunk_ctx C (full BPTT; truncated keeps the same tensors)
  infctx-cp infctx and --grad_cp 1
The claim checked: infctx's peak stays within 1.3x of its ctx_len-1k figure while unchunked grows.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch

CONFIGS = {
    "plain": [],
    "plain-cp": ["--grad_cp", "1"],
    "infctx": ["--train_type", "infctx"],
    "infctx-cp": ["--train_type", "infctx", "--grad_cp", "1"],
}


def run_one(size: str, ctx: int, extra: list[str], chunk: int, device: str, vocab: int) -> dict:
    argv = [sys.executable, "-m", "rwkvft", "bench", "--size", size, "--ctx_len", str(ctx),
            "--vocab_size", str(vocab),
            "--steps", "1", "--warmup", "0", "--accelerator", device, "--json", *extra]
    if "infctx" in extra:
        argv += ["--chunk_ctx", str(chunk)]
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        why = f"killed by signal {-r.returncode} (out of memory?)" if r.returncode < 0 else \
            (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        return {"error": why, "wall_s": time.perf_counter() - t0}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    return out


def peak(r: dict) -> float:
    return r.get("peak_mem_allocated_gib", r.get("peak_rss_gib", float("nan")))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="0.1b")
    ap.add_argument("--vocab_size", type=int, default=65536)
    ap.add_argument("--ctx", default="1024,4096,16384")
    ap.add_argument("--chunk_ctx", type=int, default=512)
    ap.add_argument("--configs", default="plain-cp,infctx,infctx-cp",
                    help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--floor", type=int, default=1, help="0 = skip the 16-token set-up row")
    args = ap.parse_args()
    ctxs = [int(c) for c in args.ctx.split(",")]
    names = args.configs.split(",")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}; size {args.size}, vocab {args.vocab_size}, "
          f"chunk_ctx {args.chunk_ctx}, one step each")
    if args.floor:
        floor = run_one(args.size, 16, [], args.chunk_ctx, args.device, args.vocab_size)
        print(f"floor (16-token step: set-up, weights, optimizer): {peak(floor):.2f} GiB", flush=True)
    print("| config | ctx_len | peak GiB | x first ctx_len | step s | wall s |")
    print("|---|---|---|---|---|---|", flush=True)
    for name in names:
        first = None
        for ctx in ctxs:
            r = run_one(args.size, ctx, CONFIGS[name], args.chunk_ctx, args.device, args.vocab_size)
            if "error" in r:
                print(f"| {name} | {ctx} | failed: {r['error']} | | | {r['wall_s']:.0f} |", flush=True)
                continue
            first = first or peak(r)
            print(f"| {name} | {ctx} | {peak(r):.2f} | {peak(r) / first:.2f} | "
                  f"{r['step_time_s']:.1f} | {r['wall_s']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
