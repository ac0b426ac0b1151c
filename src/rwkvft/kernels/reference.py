"""Sequential WKV recurrences: the oracles every faster op is tested against.

They compute in fp32 (float64 when given float64 inputs, so tests can build an exact truth)
and return y in the dtype of `r` and the final state in the compute dtype.
"""
from __future__ import annotations

import torch


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 for every input dtype except float64, which is kept for reference-grade tests."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def initial_state(state, B, H, N, like):
    return like.new_zeros(B, H, N, N) if state is None else state.to(like.dtype)


def wkv7_reference(r, log_w, k, v, a, b, state=None):
    """RWKV-7 WKV, one step at a time (the RWKV-7 recurrence of the architecture spec).

    Per batch and head, with S in [value i, key j] layout:
        sa = S a_t;  S = S * w_t[None, :] + sa b_t^T + v_t k_t^T;  y_t = S r_t
    Differentiable (plain autograd). Inputs (B, T, H, N); state (B, H, N, N) fp32 or None.
    """
    B, T, H, N = r.shape
    out_dtype, dt = r.dtype, compute_dtype(r)
    r, k, v, a, b = (t.to(dt) for t in (r, k, v, a, b))
    w = torch.exp(log_w.to(dt))
    S = initial_state(state, B, H, N, r)
    ys = []
    for t in range(T):
        sa = torch.einsum("bhij,bhj->bhi", S, a[:, t])
        S = (S * w[:, t, :, None, :]
             + sa.unsqueeze(-1) * b[:, t, :, None, :]
             + v[:, t, :, :, None] * k[:, t, :, None, :])
        ys.append(torch.einsum("bhij,bhj->bhi", S, r[:, t]))
    y = torch.stack(ys, dim=1) if ys else r.new_zeros(B, 0, H, N)
    return y.to(out_dtype), S


def wkv6_reference(r, log_w, k, v, u, state=None):
    """RWKV-6 / RWKV-5 WKV, one step at a time (the RWKV-6 recurrence of the architecture spec).

    Per batch and head, S in [value i, key j] layout, using the state *before* token t:
        y_t[i] = sum_j r_t[j] (S[i, j] + u[j] k_t[j] v_t[i]);  S = S * w_t[None, :] + v_t k_t^T
    u is the per-head bonus (H, N) (`time_faaaa`). Inputs (B, T, H, N); log_w <= 0, unbounded below.
    """
    B, T, H, N = r.shape
    out_dtype, dt = r.dtype, compute_dtype(r)
    r, k, v = (t.to(dt) for t in (r, k, v))
    u = u.to(dt).reshape(H, N)
    w = torch.exp(log_w.to(dt))
    S = initial_state(state, B, H, N, r)
    ys = []
    for t in range(T):
        rt, kt, vt = r[:, t], k[:, t], v[:, t]
        bonus = (rt * u * kt).sum(-1, keepdim=True) * vt
        ys.append(torch.einsum("bhij,bhj->bhi", S, rt) + bonus)
        S = S * w[:, t, :, None, :] + vt[..., :, None] * kt[..., None, :]
    y = torch.stack(ys, dim=1) if ys else r.new_zeros(B, 0, H, N)
    return y.to(out_dtype), S
