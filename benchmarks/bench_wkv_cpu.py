"""CPU throughput of the WKV ops and of the full model with each op.

    python benchmarks/bench_wkv_cpu.py [--T 256 1024] [--B 1] [--repeats 5] [--no-model]

(a) WKV ops alone at the 0.1B shape (H=12, N=64), fp32: the chunked op against its log-space
    form at chunk length 8 (the chunked op before the factored form; `_stable.wkv7_stable`), the
    sequential reference for RWKV-7, and RWKV-6 with initial-model decays (log_w = -exp(U(-6, -1)),
    the factored form) and with wide ones (-exp(U(-9, 2)), too strong for it: the log-space form);
    forward (no_grad) and forward+backward. Runs alternate case by case in every round; each
    case reports its best round, and the speed-up of the chunked op over the old form.
(b) the full 0.1B-shape RWKV-7 model (L=12, C=768, V=65536) forward at B=1, fp32, no_grad, with
    op "reference" and "chunked".
Tokens/s = B*T / best time (the machine may be shared: best is the least disturbed run).
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


def wkv6_inputs(B, T, H, N, lo=-9.0, hi=2.0):
    g = torch.Generator().manual_seed(0)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    log_w = -torch.exp(torch.empty(B, T, H, N).uniform_(lo, hi, generator=g))
    return [r, log_w, k, v, torch.randn(H, N, generator=g)]


def op_runner(fn, xs, backward, **kw):
    def go():
        if not backward:
            with torch.no_grad():
                fn(*xs, **kw)
            return
        leaves = [x.clone().requires_grad_() for x in xs]
        y, S = fn(*leaves, **kw)
        (y.sum() + S.sum()).backward()
    return go


def op_cases(B, T, H, N, reference):
    """(label, inputs, {variant: (fn, kwargs)}); the variant "old" is the log-space form at its
    chunk length 8, the whole chunked op before the factored form."""
    from rwkvft.kernels import _stable
    from rwkvft.kernels.chunked import choose_form
    x7 = wkv7_inputs(B, T, H, N)
    v7 = {"old": (_stable.wkv7_stable, {}), "chunked": (wkv7, {"op": "chunked"})}
    if reference:
        v7["reference"] = (wkv7, {"op": "reference"})
    cases = [("wkv7", x7, v7)]
    for what, lo, hi in (("init decays", -6.0, -1.0), ("wide decays", -9.0, 2.0)):
        x6 = wkv6_inputs(B, T, H, N, lo, hi)
        cases.append((f"wkv6 {what}", x6, {"old": (_stable.wkv6_stable, {}),
                                           "chunked": (wkv6, {"op": "chunked"})}))
    for label, xs, _ in cases:
        factored, L = choose_form(xs[1], None)
        print(f"  {label}: the chunked op runs its {'factored' if factored else 'log-space'} "
              f"form at chunk length {L}")
    return cases


def bench_ops(B, T, repeats, reference=True):
    H, N = 12, 64
    print(f"\n(a) WKV ops alone, B={B} T={T} H={H} N={N}, fp32; best of {repeats} alternating rounds")
    cases = op_cases(B, T, H, N, reference)
    best = {}
    for _ in range(repeats):
        for label, xs, variants in cases:
            for name, (fn, kw) in variants.items():
                for backward in (False, True):
                    t = best_time(op_runner(fn, xs, backward, **kw), 1)
                    key = (label, name, backward)
                    best[key] = min(best.get(key, float("inf")), t)
    for label, _, variants in cases:
        for backward in (False, True):
            kind = "fwd+bwd" if backward else "fwd    "
            for name in variants:
                t = best[(label, name, backward)]
                gain = best[(label, "old", backward)] / t
                print(f"  {label:17s} {name:9s} {kind} {t * 1e3:9.1f} ms {B * T / t:9.0f} tok/s"
                      f"  x{gain:.2f} vs old", flush=True)


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
    p.add_argument("--T", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model-repeats", type=int, default=2)
    p.add_argument("--no-reference", action="store_true", help="skip the sequential reference op")
    p.add_argument("--no-model", action="store_true", help="skip (b), the full model")
    args = p.parse_args()
    print(machine())
    for T in args.T:
        bench_ops(args.B, T, args.repeats, reference=not args.no_reference)
    if not args.no_model:
        bench_model(args.T[-1], args.model_repeats)


if __name__ == "__main__":
    main()
