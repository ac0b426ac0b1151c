"""CPU throughput of the WKV ops and of the full model with each op.

    python benchmarks/bench_wkv_cpu.py [--T 1024] [--B 1] [--repeats 3] [--no-model]

(a) WKV7 alone at the 0.1B shape (H=12, N=64): sequential reference vs chunked, forward
    (no_grad) and forward+backward; plus WKV6 chunked. (b) the full 0.1B-shape RWKV-7 model
    (L=12, C=768, V=65536) forward at B=1, fp32, no_grad, with op "reference" and "chunked".
Reports the best of --repeats runs in tokens/s (the machine may be shared: best is the
least disturbed run).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

from rwkvft.kernels import wkv6, wkv7


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"cpu: {cpu}; cores: {os.cpu_count()}; torch {torch.__version__}; "
            f"threads: {torch.get_num_threads()}")


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def wkv7_inputs(B, T, H, N):
    g = torch.Generator().manual_seed(0)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    kappa = F.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    eta = torch.rand(B, T, H, N, generator=g)
    log_w = -0.6065306597 * torch.sigmoid(2 * torch.randn(B, T, H, N, generator=g))
    return [r, log_w, k, v, -kappa, kappa * eta]


def wkv6_inputs(B, T, H, N):
    g = torch.Generator().manual_seed(0)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    log_w = -torch.exp(torch.empty(B, T, H, N).uniform_(-9, 2, generator=g))
    return [r, log_w, k, v, torch.randn(H, N, generator=g)]


def op_runner(fn, xs, op, backward):
    def go():
        if not backward:
            with torch.no_grad():
                fn(*xs, op=op)
            return
        leaves = [x.clone().requires_grad_() for x in xs]
        y, S = fn(*leaves, op=op)
        (y.sum() + S.sum()).backward()
    return go


def bench_ops(B, T, repeats):
    H, N = 12, 64
    print(f"\n(a) WKV op alone, B={B} T={T} H={H} N={N}, fp32; tokens/s = B*T / best time")
    cases = [("wkv7", wkv7, wkv7_inputs, op) for op in ("reference", "chunked")]
    cases.append(("wkv6", wkv6, wkv6_inputs, "chunked"))
    for name, fn, make, op in cases:
        xs = make(B, T, H, N)
        for backward in (False, True):
            t = best_time(op_runner(fn, xs, op, backward), repeats)
            kind = "fwd+bwd" if backward else "fwd    "
            print(f"  {name} {op:9s} {kind}  {t * 1e3:9.1f} ms  {B * T / t:10.0f} tok/s", flush=True)


def bench_model(T, repeats):
    try:
        from rwkvft.models import model_from_state_dict
        from rwkvft.models.init import new_config, random_state_dict
    except ImportError as e:
        print(f"\n(b) full model skipped: {e}")
        return
    cfg = new_config(12, 768)
    model = model_from_state_dict(random_state_dict(cfg, seed=0), dtype=torch.float32)
    idx = torch.randint(0, cfg.vocab_size, (1, T), generator=torch.Generator().manual_seed(0))
    print(f"\n(b) full model L={cfg.n_layer} C={cfg.n_embd} V={cfg.vocab_size}, B=1 T={T}, "
          "fp32, no_grad (incl. the head)")
    for op in ("reference", "chunked"):
        model.set_runtime(op=op)
        # the 65536-wide head is ~40% of the FLOPs, so also time the blocks alone
        for what, call in (("full   ", model), ("no head", model.forward_features)):
            def go():
                with torch.no_grad():
                    call(idx)
            go()  # warm-up
            t = best_time(go, repeats)
            print(f"  model op={op:9s} {what} {t * 1e3:9.1f} ms  {T / t:10.0f} tok/s", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=1024)
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model-repeats", type=int, default=2)
    p.add_argument("--no-model", action="store_true", help="skip (b), the full model")
    args = p.parse_args()
    print(machine())
    bench_ops(args.B, args.T, args.repeats)
    if not args.no_model:
        bench_model(args.T, args.model_repeats)


if __name__ == "__main__":
    main()
