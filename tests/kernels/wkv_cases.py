"""WKV test cases and the error measure shared by the kernel checks that run a GPU kernel's own
code on CPU (test_cuda_on_cpu.py, fla_interp_check.py): inputs of the test recipe
(gpu_playbook §2.2), an initial state, output gradients for y and the final state, and
max |got - reference| / max |reference| for y, the state and every input gradient."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

N = 64


class Case(NamedTuple):
    xs: list          # the op's inputs before the state
    s0: torch.Tensor  # initial state (B, H, N, N) fp32, [value, key]
    gy: torch.Tensor  # gradient arriving at y (in the I/O dtype: kernels take dy in it)
    gS: torch.Tensor  # gradient arriving at the final state
    names: tuple      # names of xs, for the error report


def wkv7_case(T, dtype=torch.float32, strongest=False, B=2, H=2, seed=0) -> Case:
    """RWKV-7: r, k, v ~ N(0,1), log_w in RWKV-7's range (fp32), a = -kappa, b = kappa*eta."""
    g = torch.Generator().manual_seed(seed + T)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    log_w = -math.exp(-0.5) * torch.sigmoid(torch.randn(B, T, H, N, generator=g) * 3)
    if strongest:   # every channel at RWKV-7's smallest decay d = exp(-e^-0.5) = 0.545
        log_w = torch.full_like(log_w, -math.exp(-0.5))
    kappa = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    eta = torch.sigmoid(torch.randn(B, T, H, N, generator=g))
    xs = [r, log_w, k, v, -kappa, kappa * eta]
    xs = [x if i == 1 else x.to(dtype) for i, x in enumerate(xs)]
    return Case(xs, torch.randn(B, H, N, N, generator=g) * 0.3,
                torch.randn(B, T, H, N, generator=g).to(dtype), torch.randn(B, H, N, N, generator=g),
                ("r", "log_w", "k", "v", "a", "b"))


def wkv6_case(T, B=2, H=2, seed=0) -> Case:
    """RWKV-6: unbounded data-dependent decay log_w = -exp(x - 2), bonus u (H, N); fp32."""
    g = torch.Generator().manual_seed(seed + T)
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    log_w = -torch.exp(torch.randn(B, T, H, N, generator=g) - 2)
    u = torch.randn(H, N, generator=g) * 0.5
    return Case([r, log_w, k, v, u], torch.randn(B, H, N, N, generator=g) * 0.3,
                torch.randn(B, T, H, N, generator=g), torch.randn(B, H, N, N, generator=g),
                ("r", "log_w", "k", "v", "u"))


def _outputs_and_grads(fn, xs, s0, gy, gS):
    leaves = [x.detach().clone().requires_grad_() for x in xs + [s0]]
    y, S = fn(*leaves)
    ((y * gy.to(y.dtype)).sum() + (S * gS.to(S.dtype)).sum()).backward()
    return [y.detach(), S.detach()] + [t.grad for t in leaves]


def compare(fn, reference, case: Case) -> dict[str, float]:
    """Relative max error of fn(*xs, s0) against `reference` run in float64 on the same (already
    rounded) inputs: y, state, then the gradient of each input and of the initial state (state0)."""
    got = _outputs_and_grads(fn, case.xs, case.s0, case.gy, case.gS)
    want = _outputs_and_grads(reference, [x.double() for x in case.xs], case.s0.double(),
                              case.gy.double(), case.gS.double())
    out = {}
    for name, a, b in zip(("y", "state", *case.names, "state0"), got, want):
        assert a is not None and a.shape == b.shape, name
        finite = bool(torch.isfinite(a).all())
        out[name] = ((a.double() - b).abs().max() / b.abs().max()).item() if finite else math.inf
    return out
