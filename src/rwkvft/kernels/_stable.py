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

from ._chunkcore import empty_result, to_chunks, wkv6_from_couplings, wkv7_from_couplings
from .reference import compute_dtype

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
    """RWKV-7 WKV (same contract as `wkv7_reference`) in the log-space form; the chunk algebra
    is `_chunkcore.wkv7_from_couplings`."""
    dt = compute_dtype(r)
    if r.shape[1] == 0:
        return empty_result(r, state, dt)
    r_, ld, k_, v_, a_, b_ = (to_chunks(x, chunk_len, dt) for x in (r, log_w, k, v, a, b))
    E, Ep, eG, eGp, eGL, eGLmG = _decays(ld)
    bk = torch.stack((b_, k_), -1)
    A_ab, A_ak = _pair(a_, Ep, bk).unbind(-3)
    A_r = torch.cat(_pair(r_, E, bk).unbind(-3), -1)                  # [A_rb, A_rk]
    return wkv7_from_couplings(r_, k_, v_, a_, b_, A_ab, A_ak, A_r, (eG, eGp, eGL, eGLmG), state,
                               r.shape[1], r.dtype)


# ----------------------------------------------------------------------------- RWKV-6 / 5
def wkv6_stable(r, log_w, k, v, u, state=None, chunk_len: int = STABLE_CHUNK_LEN):
    """RWKV-6 WKV (same contract as `wkv6_reference`) in the log-space form, stable for any
    log_w <= 0; the chunk algebra is `_chunkcore.wkv6_from_couplings`:
        A[t, s] = sum_j r_t[j] k_s[j] e^{G_{t-1} - G_s}[j]."""
    dt = compute_dtype(r)
    if r.shape[1] == 0:
        return empty_result(r, state, dt)
    r_, ld, k_, v_ = (to_chunks(x, chunk_len, dt) for x in (r, log_w, k, v))
    _, Ep, _, eGp, eGL, eGLmG = _decays(ld)
    A = _pair(r_, Ep, k_.unsqueeze(-1)).squeeze(-3)
    return wkv6_from_couplings(r_, k_, v_, u.to(dt).reshape(-1, 1, 1, r.shape[-1]), A, eGp, eGL,
                               eGLmG, state, r.shape[1], r.dtype)
