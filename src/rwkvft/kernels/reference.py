"""Sequential fp32 WKV recurrences: the oracles every faster op is tested against."""
from __future__ import annotations

import torch


def wkv7_reference(r, log_w, k, v, a, b, state=None):
    """RWKV-7 WKV, one step at a time (spec rwkv_arch.md §1.3 / §4.3).

    Per batch and head, with S in [value i, key j] layout:
        sa = S a_t;  S = S * w_t[None, :] + sa b_t^T + v_t k_t^T;  y_t = S r_t
    Differentiable (plain autograd). Inputs (B, T, H, N); state (B, H, N, N) fp32 or None.
    """
    B, T, H, N = r.shape
    out_dtype = r.dtype
    r, k, v, a, b = (t.float() for t in (r, k, v, a, b))
    w = torch.exp(log_w.float())
    S = r.new_zeros(B, H, N, N) if state is None else state.float()
    ys = []
    for t in range(T):
        sa = torch.einsum("bhij,bhj->bhi", S, a[:, t])
        S = (S * w[:, t, :, None, :]
             + sa.unsqueeze(-1) * b[:, t, :, None, :]
             + v[:, t, :, :, None] * k[:, t, :, None, :])
        ys.append(torch.einsum("bhij,bhj->bhi", S, r[:, t]))
    y = torch.stack(ys, dim=1) if ys else r.new_zeros(B, 0, H, N)
    return y.to(out_dtype), S
