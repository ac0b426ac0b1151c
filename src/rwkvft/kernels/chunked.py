"""Chunked pure-PyTorch WKV ops for CPU (the chunked form of the architecture spec).

The sequence is cut into chunks of `chunk_len` tokens. Everything inside a chunk that does
not depend on the incoming state is computed for all chunks at once with batched tensor ops;
only a short loop over chunks carries the (B, H, N, N) state. Plain autograd differentiates it.

Stability: decays enter only as e^{x} with x <= 0. Pairwise decays e^{G_t - G_s} are built
from a masked cumulative sum of log decays *between* s and t (never as a difference of two
long cumulative sums), so a channel that decays by e^-1000 at one step and by e^-1e-4 at the
next keeps full fp32 accuracy. RWKV-6 decay has no lower bound, so nothing may use e^{-G}.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import compute_dtype, initial_state

# Chosen by measurement (benchmarks/bench_wkv_cpu.py, 2-core EPYC, T=1024 H=12 N=64, B=1..2):
# 8 beat 4, 12, 16 and 32 on forward and forward+backward; the pairwise (L, L, N) decay
# tensors grow with L, the per-chunk state products shrink with it.
DEFAULT_CHUNK_LEN = 8


# ----------------------------------------------------------------------------- layout helpers
def _to_chunks(x, L, dt):
    """(B, T, H, N) -> (B, H, nc, L, N) in dtype dt, zero-padding T up to a multiple of L.

    Zero padding is exact: a padded step has log decay 0 (d = 1) and k = v = a = b = 0,
    so it leaves the state unchanged, and its outputs are cut off afterwards.
    """
    B, T, H, N = x.shape
    pad = (-T) % L
    x = x.to(dt)
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
    return x.view(B, -1, L, H, N).permute(0, 3, 1, 2, 4)


def _from_chunks(y, T):
    """(B, H, nc, L, N) -> (B, T, H, N)."""
    B, H, nc, L, N = y.shape
    return y.permute(0, 2, 3, 1, 4).reshape(B, nc * L, H, N)[:, :T]


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


def _inv_unit_lower(A):
    """(I - A)^{-1} for strictly lower-triangular A: prod_i (I + A^(2^i)), since A^L = 0.

    A few batched matmuls; much faster on CPU than a batched triangular solve, which
    loops over the (B, H, chunks) batch one small LAPACK call at a time. It sums the same
    Neumann series as forward substitution; tests check it against float64 (RWKV-7 keeps
    |A| <= 1 since a = -k̂, b = k̂ * eta with unit k̂).
    """
    L = A.shape[-1]
    P = A + torch.eye(L, dtype=A.dtype, device=A.device)
    Ak, n = A, 2
    while n < L:
        Ak = Ak @ Ak
        P = P + P @ Ak
        n *= 2
    return P


def _carry(S, decay, Q, UV, BK, Wt=None):
    """Run the state across chunks and read it out, one chunk at a time.

    For chunk c with incoming state S (value x key):
        y_c = Q_c S^T;   S <- S diag(decay_c) + (S Wt_c + UV_c) BK_c
    (Wt zero-padded to UV's width; None for RWKV-6, whose transition is diagonal). Doing the
    products here instead of forming per-chunk N x N terms keeps every temporary small.
    Returns (y_state (..., nc, L, N), final S).

    One autograd node for the whole loop (`_Carry`): left to autograd, each step of the loop
    adds about six nodes, and under infctx's activation checkpoint the forward graph of the
    whole sample stays in host memory until the backward, so those nodes made memory grow
    with the sample (~2.5 KB per token and layer at chunk_len 8).
    """
    dt = S.dtype
    parts = [t.to(dt) for t in (decay, Q, UV, BK)] + [None if Wt is None else Wt.to(dt)]
    if not torch.is_grad_enabled():  # evaluation, generation: no states to keep
        y, S, _ = _carry_loop(S, *parts, keep=False)
        return y, S
    return _Carry.apply(S, *parts)


def _carry_loop(S, decay, Q, UV, BK, Wt, keep: bool):
    """The carry's forward: (y, final S, the states entering each chunk or None)."""
    nc = Q.shape[-3]
    with torch.autocast(S.device.type, enabled=False):  # the carry runs in its inputs' dtype
        states = S.new_empty(*S.shape[:-2], nc, *S.shape[-2:]) if keep else None
        y = Q.new_empty(Q.shape)
        for c in range(nc):
            if keep:
                states[..., c, :, :] = S
            y[..., c, :, :] = Q[..., c, :, :] @ S.transpose(-1, -2)
            S = S * decay[..., c, :].unsqueeze(-2) + _step_x(S, UV, Wt, c) @ BK[..., c, :, :]
    return y, S, states


class _Carry(torch.autograd.Function):
    """`_carry` with a hand-written backward: the states entering each chunk are saved as one
    tensor (the same memory autograd would keep), everything else is recomputed."""

    @staticmethod
    def forward(ctx, S0, decay, Q, UV, BK, Wt):
        y, S, states = _carry_loop(S0, decay, Q, UV, BK, Wt, keep=True)
        ctx.save_for_backward(states, decay, Q, UV, BK, Wt)
        return y, S

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gS):
        states, decay, Q, UV, BK, Wt = ctx.saved_tensors
        nc = Q.shape[-3]
        g_decay, g_Q, g_UV, g_BK = (torch.empty_like(t) for t in (decay, Q, UV, BK))
        g_Wt = None if Wt is None else torch.empty_like(Wt)
        gS = torch.zeros_like(states[..., 0, :, :]) if gS is None else gS
        gy = torch.zeros_like(Q) if gy is None else gy
        with torch.autocast(states.device.type, enabled=False):
            for c in reversed(range(nc)):
                S, d, bk = states[..., c, :, :], decay[..., c, :], BK[..., c, :, :]
                X = _step_x(S, UV, Wt, c)
                gX = gS @ bk.transpose(-1, -2)
                g_BK[..., c, :, :] = X.transpose(-1, -2) @ gS
                g_decay[..., c, :] = (gS * S).sum(-2)
                g_UV[..., c, :, :] = gX
                g_Q[..., c, :, :] = gy[..., c, :, :] @ S
                gS = gS * d.unsqueeze(-2) + gy[..., c, :, :].transpose(-1, -2) @ Q[..., c, :, :]
                if Wt is not None:
                    g_Wt[..., c, :, :] = S.transpose(-1, -2) @ gX
                    gS = gS + gX @ Wt[..., c, :, :].transpose(-1, -2)
        return gS, g_decay, g_Q, g_UV, g_BK, g_Wt


def _step_x(S, UV, Wt, c):
    """What chunk c writes into the state before the key product: S Wt_c + UV_c (RWKV-7) or UV_c."""
    uv = UV[..., c, :, :]
    return uv if Wt is None else S @ Wt[..., c, :, :] + uv


def _empty(r, state, dt):
    B, T, H, N = r.shape
    return r.new_zeros(B, 0, H, N), initial_state(state, B, H, N, r.new_zeros((), dtype=dt))


# ----------------------------------------------------------------------------- RWKV-7
def wkv7_chunked(r, log_w, k, v, a, b, state=None, chunk_len: int = DEFAULT_CHUNK_LEN):
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
        return _empty(r, state, dt)
    L = chunk_len
    r_, ld, k_, v_, a_, b_ = (_to_chunks(x, L, dt) for x in (r, log_w, k, v, a, b))
    E, Ep, eG, eGp, eGL, eGLmG = _decays(ld)

    bk = torch.stack((b_, k_), -1)
    A_ab, A_ak = _pair(a_, Ep, bk).unbind(-3)
    A_rb, A_rk = _pair(r_, E, bk).unbind(-3)
    rhs = torch.cat((A_ak @ v_, a_ * eGp), -1)
    U0, W = (_inv_unit_lower(A_ab) @ rhs).split(N, -1)

    # S_new = S0 diag(e^{G_L}) + (S0 W^T + U0^T) Bt + V^T Kt, as one product [.., V^T] [Bt; Kt]
    BK = torch.cat((b_, k_), -2) * eGLmG.repeat(1, 1, 1, 2, 1)
    UV = torch.cat((U0, v_), -2).transpose(-1, -2)
    Wt = F.pad(W, (0, 0, 0, L)).transpose(-1, -2)
    Q = A_rb @ W + r_ * eG
    S0 = initial_state(state, B, H, N, r_)
    y_state, S = _carry(S0, eGL, Q, UV, BK, Wt)
    y = A_rk @ v_ + A_rb @ U0 + y_state
    return _from_chunks(y, T).to(r.dtype), S


# ----------------------------------------------------------------------------- RWKV-6 / 5
def wkv6_chunked(r, log_w, k, v, u, state=None, chunk_len: int = DEFAULT_CHUNK_LEN):
    """RWKV-6 WKV (same contract as `wkv6_reference`), chunked, stable for any log_w <= 0.

    Per chunk with incoming state S0:
        y_t = (r_t * e^{G_{t-1}}) S0^T + sum_{s<t} A[t, s] v_s + (r_t . (u * k_t)) v_t,
        A[t, s] = sum_j r_t[j] k_s[j] e^{G_{t-1} - G_s}[j],
        S_new = S0 diag(e^{G_L}) + V^T (k * e^{G_L - G}).
    """
    B, T, H, N = r.shape
    dt = compute_dtype(r)
    if T == 0:
        return _empty(r, state, dt)
    L = chunk_len
    r_, ld, k_, v_ = (_to_chunks(x, L, dt) for x in (r, log_w, k, v))
    u_ = u.to(dt).reshape(H, 1, 1, N)
    _, Ep, _, eGp, eGL, eGLmG = _decays(ld)

    A = _pair(r_, Ep, k_.unsqueeze(-1)).squeeze(-3)
    A = A + torch.diag_embed((r_ * u_ * k_).sum(-1))
    S0 = initial_state(state, B, H, N, r_)
    y_state, S = _carry(S0, eGL, r_ * eGp, v_.transpose(-1, -2), k_ * eGLmG)
    y = A @ v_ + y_state
    return _from_chunks(y, T).to(r.dtype), S
