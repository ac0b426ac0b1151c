"""`--compile` against eager: the same training step (bench.setup: model, method, batch_loss,
backward, AdamW), two copies in one process, timed in alternating pairs so that the load of a
shared machine hits both alike (the order inside a pair alternates too).

Both copies start from the same weights and draw the same batches, so their first losses must
agree to float rounding; later ones drift further apart (AdamW turns rounding-sized gradient
differences near zero into lr-sized weight differences). The script prints both.

    python benchmarks/bench_compile.py [--size 0.1b] [--version x070] [--ctx_len 256]
        [--peft miss --peft_config '{"r":64}'] [--pairs 4] [--warmup 1] [--threads N] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from rwkvft import bench
from rwkvft.models.compile import compile_seconds


def _timed(setup, k: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    loss = float(setup.step(k))
    if setup.device.type == "cuda":
        torch.cuda.synchronize(setup.device)
    return time.perf_counter() - t0, loss


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    base = dict(size=args.size, version=args.version, ctx_len=args.ctx_len, micro_bsz=args.micro_bsz,
                accelerator=args.accelerator, precision=args.precision, peft=args.peft,
                peft_config=args.peft_config, warmup=args.warmup, grad_cp=args.grad_cp, seed=args.seed)
    eager = bench.setup(bench.BenchConfig(**base, compile=0))
    compiled = bench.setup(bench.BenchConfig(**base, compile=1))
    losses = {"eager": [], "compiled": []}
    t0, c0 = time.perf_counter(), compile_seconds()
    for k in range(args.warmup):
        losses["compiled"].append(_timed(compiled, k)[1])
    warm_compiled, compiling = time.perf_counter() - t0, compile_seconds() - c0
    for k in range(args.warmup):
        losses["eager"].append(_timed(eager, k)[1])
    times = {"eager": [], "compiled": []}
    for i in range(args.pairs):
        order = (("eager", eager), ("compiled", compiled))
        for name, s in (order if i % 2 == 0 else order[::-1]):
            dt, loss = _timed(s, args.warmup + i)
            times[name].append(dt)
            losses[name].append(loss)
    tokens = args.micro_bsz * args.ctx_len
    rate, rate_what = bench.matmul_rate(eager.device)
    fpt = bench.flops_per_token(bench.matmul_param_counts(eager.model), bool(args.grad_cp))
    out = {"size": args.size, "version": args.version, "ctx_len": args.ctx_len,
           "micro_bsz": args.micro_bsz, "peft": args.peft, "peft_config": args.peft_config,
           "device": eager.device.type if eager.device.type == "cpu" else torch.cuda.get_device_name(),
           "precision": eager.precision, "grad_cp": args.grad_cp, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
           "compile_s": compiling, "first_compiled_steps_s": warm_compiled,
           "compile_note": compiled.compile_note, "matmul_flops_per_s": rate, "matmul_measured": rate_what,
           "flops_per_token": fpt, "step_s": times,
           "losses": losses, "first_loss_diff": abs(losses["eager"][0] - losses["compiled"][0]),
           "max_loss_diff": max(abs(a - b) for a, b in zip(losses["eager"], losses["compiled"]))}
    for name in times:
        med = statistics.median(times[name])
        out[f"{name}_tokens_per_s"] = tokens / med
        out[f"{name}_mfu"] = fpt * tokens / med / rate
    out["speedup_median_of_pairs"] = statistics.median(e / c for e, c in zip(times["eager"], times["compiled"]))
    return out


def text(r: dict) -> str:
    return "\n".join([
        f"{r['version']} {r['size']} {r['peft']} {r['peft_config']} ctx {r['ctx_len']} mb {r['micro_bsz']} "
        f"{r['precision']} on {r['device']} ({r['threads']} threads, load {r['load_average']:.1f})",
        f"  eager    {r['eager_tokens_per_s']:8.1f} tokens/s  MFU {100 * r['eager_mfu']:.1f}%  "
        f"steps {', '.join(f'{t:.2f}' for t in r['step_s']['eager'])} s",
        f"  compiled {r['compiled_tokens_per_s']:8.1f} tokens/s  MFU {100 * r['compiled_mfu']:.1f}%  "
        f"steps {', '.join(f'{t:.2f}' for t in r['step_s']['compiled'])} s",
        f"  speedup {r['speedup_median_of_pairs']:.2f}x (median of pairs); compiling {r['compile_s']:.1f} s "
        f"(first compiled step(s) {r['first_compiled_steps_s']:.1f} s)",
        f"  |loss diff| {r['first_loss_diff']:.2e} at the first step (same weights), at most "
        f"{r['max_loss_diff']:.2e} over all (AdamW's first updates are ~lr x sign(gradient), so a "
        f"rounding-sized gradient difference near 0 moves weights by up to 2 lr)",
        f"  matmul rate {r['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s ({r['matmul_measured']})",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="0.1b")
    ap.add_argument("--version", default="x070")
    ap.add_argument("--ctx_len", type=int, default=256)
    ap.add_argument("--micro_bsz", type=int, default=1)
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--precision", default="")
    ap.add_argument("--grad_cp", type=int, default=0)
    ap.add_argument("--peft", default="miss")
    ap.add_argument("--peft_config", default='{"r":64}')
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0 = torch's default); 1 avoids OpenMP barriers stalling on a "
                         "loaded machine, where a descheduled thread holds up every parallel op")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = run(args)
    print(json.dumps(r) if args.json else text(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
