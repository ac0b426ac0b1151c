"""The log-space (stable) form of the chunked WKV op: exact in fp32 for ANY log_w <= 0.

Pairwise decays e^{G_t - G_s} are built from a masked cumulative sum of log decays *between* s
and t (never as a difference of two long cumulative sums), so a channel that decays by e^-1000
at one step and by e^-1e-4 at the next keeps full fp32 accuracy; nothing uses e^{-G}. The price
is (L, L, N) pairwise tensors per chunk and a deep autograd graph through them. chunked.py runs
this form only where its factored form is not safe (RWKV-6 with strong decays).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._chunkcore import carry, empty_result, from_chunks, inv_unit_lower, to_chunks
from .reference import compute_dtype, initial_state

# Chosen by measurement (benchmarks/bench_wkv_cpu.py, 2-core EPYC, T=1024 H=12 N=64, B=1..2):
# 8 beat 4, 12, 16 and 32 on forward and forward+backward; the pairwise (L, L, N) decay
# tensors grow with L, the per-chunk state products shrink with it.
STABLE_CHUNK_LEN = 8


def _decays(ld):
    """Per-chunk decay factors from log decays ld (..., L, N), all exponents <= 0.

    Returns (E, Ep, eG, eGp, eGL, eGLmG), pairwise ones indexed [s, t] (source s, target t):
      E[s, t]  = e^{G_t - G_s}      for s <= t, else 0       (..., L, L, N)
      Ep[s, t] = e^{G_{t-1} - G_s}  for s <  t, else 0
      eG = e^{G_t}, eGp = e^{G_{t-1}}, eGL = e^{G_L} (..., N), eGLmG = e^{G_L - G_s}
    where G_t is the sum of ld over chunk steps 1..t.
    """
    L = ld.shape[-2]
    ones = torch.ones(L, L, dtype=torch.bool, device=ld.device)
    later = torch.triu(ones, 1).unsqueeze(-1)                     # [s, t]: t > s
    incl = torch.triu(ones).unsqueeze(-1).to(ld.dtype)            # [s, t]: t >= s
    # D[s, t] = sum_{s < tau <= t} ld_tau: a cumulative sum along t of ld masked to tau > s.
    D = torch.where(later, ld.unsqueeze(-3), 0.0).cumsum(-2)
    E = torch.exp(D) * incl
    Ep = F.pad(E[..., :-1, :], (0, 0, 1, 0))
    G = ld.cumsum(-2)
    Gp = F.pad(G[..., :-1, :], (0, 0, 1, 0))
    rev = ld.flip(-2).cumsum(-2).flip(-2)              # sum_{tau >= s}
    GLmG = F.pad(rev[..., 1:, :], (0, 0, 0, 1))        # sum_{tau > s}, no cancellation
    return E, Ep, torch.exp(G), torch.exp(Gp), torch.exp(G[..., -1, :]), torch.exp(GLmG)


def _pair(q, E, keys):
    """A[..., c, t, s] = sum_j q[t, j] keys[s, j, c] E[s, t, j]; keys (..., L, N, c).

    Batched over s, so each product is a plain (t x j) @ (j x c) matmul. The result is made
    contiguous: CPU bmm on these permuted strides is orders of magnitude slower.
    """
    A = (E * q.unsqueeze(-3)).matmul(keys)                        # [s, t, c]
    return A.permute(*range(A.dim() - 3), -1, -2, -3).contiguous()



# ----------------------------------------------------------------------------- RWKV-7
def wkv7_stable(r, log_w, k, v, a, b, state=None, chunk_len: int = STABLE_CHUNK_LEN):
    """RWKV-7 WKV (same contract as `wkv7_reference`), chunked; see module docstring.

    Per chunk with incoming state S0, rows u_t = S_{t-1} a_t solve
        (I - A_ab) U = A_ak V + (a * e^{Gp}) S0^T.
    Split U = U0 + W S0^T with (I - A_ab) U0 = A_ak V and (I - A_ab) W = a * e^{Gp}, so every
    state-free part is solved for all chunks at once and the chunk loop is a few small matmuls:
        S_new = S0 diag(e^{G_L}) + (S0 W^T + U0^T) Bt + V^T Kt,   Bt, Kt = b, k scaled by e^{G_L - G}
        Y = A_rk V + A_rb U0 + (A_rb W + r * e^{G}) S0^T.
    """
    B, T, H, N = r.shape
    dt = compute_dtype(r)
    if T == 0:
        return empty_result(r, state, dt)
    L = chunk_len
    r_, ld, k_, v_, a_, b_ = (to_chunks(x, L, dt) for x in (r, log_w, k, v, a, b))
    E, Ep, eG, eGp, eGL, eGLmG = _decays(ld)

    bk = torch.stack((b_, k_), -1)
    A_ab, A_ak = _pair(a_, Ep, bk).unbind(-3)
    A_rb, A_rk = _pair(r_, E, bk).unbind(-3)
    rhs = torch.cat((A_ak @ v_, a_ * eGp), -1)
    U0, W = (inv_unit_lower(A_ab) @ rhs).split(N, -1)

    # S_new = S0 diag(e^{G_L}) + (S0 W^T + U0^T) Bt + V^T Kt, as one product [.., V^T] [Bt; Kt]
    BK = torch.cat((b_, k_), -2) * eGLmG.repeat(1, 1, 1, 2, 1)
    UV = torch.cat((U0, v_), -2).transpose(-1, -2)
    Wt = F.pad(W, (0, 0, 0, L)).transpose(-1, -2)
    Q = A_rb @ W + r_ * eG
    S0 = initial_state(state, B, H, N, r_)
    y_state, S = carry(S0, eGL, Q, UV, BK, Wt)
    y = A_rk @ v_ + A_rb @ U0 + y_state
    return from_chunks(y, T).to(r.dtype), S


# ----------------------------------------------------------------------------- RWKV-6 / 5
def wkv6_stable(r, log_w, k, v, u, state=None, chunk_len: int = STABLE_CHUNK_LEN):
    """RWKV-6 WKV (same contract as `wkv6_reference`), chunked, stable for any log_w <= 0.

    Per chunk with incoming state S0:
        y_t = (r_t * e^{G_{t-1}}) S0^T + sum_{s<t} A[t, s] v_s + (r_t . (u * k_t)) v_t,
        A[t, s] = sum_j r_t[j] k_s[j] e^{G_{t-1} - G_s}[j],
        S_new = S0 diag(e^{G_L}) + V^T (k * e^{G_L - G}).
    """
    B, T, H, N = r.shape
    dt = compute_dtype(r)
    if T == 0:
        return empty_result(r, state, dt)
    L = chunk_len
    r_, ld, k_, v_ = (to_chunks(x, L, dt) for x in (r, log_w, k, v))
    u_ = u.to(dt).reshape(H, 1, 1, N)
    _, Ep, _, eGp, eGL, eGLmG = _decays(ld)

    A = _pair(r_, Ep, k_.unsqueeze(-1)).squeeze(-3)
    A = A + torch.diag_embed((r_ * u_ * k_).sum(-1))
    S0 = initial_state(state, B, H, N, r_)
    y_state, S = carry(S0, eGL, r_ * eGp, v_.transpose(-1, -2), k_ * eGLmG)
    y = A @ v_ + y_state
    return from_chunks(y, T).to(r.dtype), S
