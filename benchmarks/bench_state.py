"""State tuning next to MiSS r=64 on the 0.1B shape (L12 C768 V65536), CPU, fp32.

Each setup runs `rwkvft bench --json` in its own process (peak RSS is per process) and the
script prints one table row per setup: trainable parameters, step time, tokens/s, peak RSS.

    python benchmarks/bench_state.py [--ctx_len 512] [--steps 2] [--warmup 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SETUPS = (("state", "{}"), ("miss", '{"r":64}'))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="0.1b")
    ap.add_argument("--ctx_len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    print(f"{args.size}, cpu fp32, micro_bsz 1, ctx_len {args.ctx_len}, op chunked, "
          f"{args.steps} timed steps after {args.warmup} warm-up; load average {os.getloadavg()[0]:.1f}")
    print("| method | trainable params | step time | tokens/s | peak RSS |")
    print("|---|---|---|---|---|")
    for peft, conf in SETUPS:
        cmd = [sys.executable, "-m", "rwkvft", "bench", "--size", args.size, "--accelerator", "cpu",
               "--op", "chunked", "--ctx_len", str(args.ctx_len), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--peft", peft, "--peft_config", conf, "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {peft} {conf} | {r['trainable_params']:,} ({100 * r['trainable_params'] / r['params']:.3f}%) "
              f"| {r['step_time_s']:.2f} s | {r['tokens_per_s']:.0f} | {r['peak_rss_gib']:.2f} GiB |",
              flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
