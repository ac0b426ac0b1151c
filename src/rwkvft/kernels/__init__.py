"""WKV operators behind one interface.

All ops take per-head inputs of shape (B, T, H, N) and an optional initial state
(B, H, N, N) in the official [value, key] layout, and return (y, final_state):
y has shape (B, T, H, N) in the dtype of `r`; the state is always fp32.

RWKV-7 (x070):  wkv7(r, log_w, k, v, a, b, state, op)
    S_t = S_{t-1} diag(w_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T;  y_t = S_t r_t
    log_w = log of the per-channel decay (<= 0), fp32.
RWKV-6 / RWKV-5 (x060, x052):  wkv6(r, log_w, k, v, u, state, op)
    y_t = S_{t-1} r_t + (r_t . (u * k_t)) v_t;  S_t = S_{t-1} diag(w_t) + v_t k_t^T
    u = bonus (H, N) (`time_faaaa`); log_w <= 0 with no lower bound.

Ops are chosen by an explicit name; GPU ops are imported lazily, only when asked for.
"""
from __future__ import annotations

import torch

from ..errors import UserError

CPU_OPS = ("chunked", "reference")
GPU_OPS = ("cuda", "fla", "triton")


def _bad_op(op: str) -> UserError:
    if op in GPU_OPS:
        return UserError(f"--op {op} needs the GPU kernels, which this build does not have yet; "
                         f"use --op chunked (CPU)")
    return UserError(f"unknown --op {op!r}; choose one of {', '.join(CPU_OPS + GPU_OPS)}")


def wkv7(r, log_w, k, v, a, b, state: torch.Tensor | None = None, op: str = "chunked"):
    if op == "reference":
        from .reference import wkv7_reference
        return wkv7_reference(r, log_w, k, v, a, b, state)
    if op == "chunked":
        from .chunked import wkv7_chunked
        return wkv7_chunked(r, log_w, k, v, a, b, state)
    raise _bad_op(op)


def wkv6(r, log_w, k, v, u, state: torch.Tensor | None = None, op: str = "chunked"):
    if op == "reference":
        from .reference import wkv6_reference
        return wkv6_reference(r, log_w, k, v, u, state)
    if op == "chunked":
        from .chunked import wkv6_chunked
        return wkv6_chunked(r, log_w, k, v, u, state)
    raise _bad_op(op)
