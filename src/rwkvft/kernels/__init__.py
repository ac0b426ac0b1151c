"""WKV operators behind one interface.

All ops take per-head inputs of shape (B, T, H, N) and an optional initial state
(B, H, N, N) in the official [value, key] layout, and return (y, final_state):
y has shape (B, T, H, N) in the dtype of `r`; the state is always fp32.

RWKV-7 (x070):  wkv7(r, log_w, k, v, a, b, state, op)
    S_t = S_{t-1} diag(w_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T;  y_t = S_t r_t
    log_w = log of the per-channel decay (<= 0), fp32.

Ops are chosen by an explicit name; GPU ops are imported lazily, only when asked for.
"""
from __future__ import annotations

import torch

from ..errors import UserError

CPU_OPS = ("chunked", "reference")
GPU_OPS = ("cuda", "fla", "triton")


def wkv7(r, log_w, k, v, a, b, state: torch.Tensor | None = None, op: str = "chunked"):
    if op == "reference":
        from .reference import wkv7_reference
        return wkv7_reference(r, log_w, k, v, a, b, state)
    if op == "chunked":
        from .chunked import wkv7_chunked
        return wkv7_chunked(r, log_w, k, v, a, b, state)
    if op in GPU_OPS:
        raise UserError(f"--op {op} needs the GPU kernels, which this build does not have yet; "
                        f"use --op chunked (CPU)")
    raise UserError(f"unknown --op {op!r}; choose one of {', '.join(CPU_OPS + GPU_OPS)}")
