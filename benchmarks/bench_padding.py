"""Padded batches on chat-like data: pad-to-ctx_len (the old pad mode) vs dynamic padding vs
dynamic + --group_by_length, measured with `rwkvft bench --lengths ... --batching ...`.

Usage: python benchmarks/bench_padding.py [--sizes tiny,0.1b] [--lengths lognormal:median=300,max=3000]
Workload: sample lengths log-normal (median 300 tokens, sigma 0.8, at most 3000), ctx_len 4096,
micro_bsz 4, World vocabulary (65536), fp32 on CPU, MiSS r=64, grad_cp 1 except on tiny. Prints, per model and batching,
the padding fraction of a whole pass of the workload, of the timed steps, and real (non-padding)
tokens/s, then the speed-up of real tokens/s against pad-to-ctx. Targets of the issue: padding <= 10% grouped,
real tokens/s >= 5x pad-to-ctx.
"""
from __future__ import annotations

import argparse
import os
import platform

import torch

from rwkvft.bench import BenchConfig, run_bench
from rwkvft.data.lengths import padding_fraction, plan_batches, sample_lengths

# (warmup, timed steps) per size and batching: pad-to-ctx steps are ~10x dearer, 0.1B ~20x tiny
STEPS = {"tiny": {"ctx": (1, 2), "dynamic": (2, 12), "grouped": (2, 12)},
         "0.1b": {"ctx": (0, 1), "dynamic": (0, 2), "grouped": (0, 2)}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="tiny,0.1b")
    ap.add_argument("--lengths", default="lognormal:median=300,max=3000")
    ap.add_argument("--ctx_len", type=int, default=4096)
    ap.add_argument("--micro_bsz", type=int, default=4)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average "
          f"{os.getloadavg()[0]:.1f}")
    lengths = sample_lengths(args.lengths, args.ctx_len, args.micro_bsz, 0)
    print(f"workload {args.lengths}: {len(lengths)} samples, median {int(sorted(lengths)[len(lengths) // 2])}, "
          f"mean {lengths.mean():.0f}, max {lengths.max()}; ctx_len {args.ctx_len}, micro_bsz {args.micro_bsz}")
    print("| model | batching | padding (whole pass) | padding (timed steps) | real tokens/s | "
          "positions/s | step s |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        results = {}
        for batching in ("grouped", "dynamic", "ctx"):  # the dear pad-to-ctx run last
            warmup, steps = STEPS.get(size, STEPS["0.1b"])[batching]
            plan = plan_batches(lengths, args.micro_bsz, batching, args.ctx_len, 0)
            r = run_bench(BenchConfig(size=size, vocab_size=65536, ctx_len=args.ctx_len,
                                      micro_bsz=args.micro_bsz, steps=steps, warmup=warmup,
                                      accelerator="cpu", peft_config='{"r":64}',
                                      grad_cp=int(size != "tiny"),  # 0.1B at 4 x 4096 needs it on 24 GiB
                                      lengths=args.lengths, batching=batching))
            results[batching] = r["tokens_per_s"]
            print(f"| {size} | {batching} | {100 * padding_fraction(plan):.1f}% | "
                  f"{100 * r['padding_fraction']:.1f}% | {r['tokens_per_s']:,.0f} | "
                  f"{r['positions_per_s']:,.0f} | {r['step_time_s']:.2f} |", flush=True)
        print(f"{size}: real tokens/s vs pad-to-ctx: dynamic {results['dynamic'] / results['ctx']:.1f}x, "
              f"grouped {results['grouped'] / results['ctx']:.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
