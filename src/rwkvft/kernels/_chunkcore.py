"""Pieces shared by both forms of the chunked WKV op (chunked.py: the factored form, _stable.py:
the log-space form): the chunk layout, the unit-lower-triangular inverse, the loop that carries
the (B, H, N, N) state across chunks with its hand-written backward (`_Carry`), and each
version's chunk algebra once its intra-chunk couplings are known (`wkv7_from_couplings`,
`wkv6_from_couplings`): the two forms differ only in how they build those couplings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import initial_state


# ----------------------------------------------------------------------------- layout helpers
def to_chunks(x, L, dt):
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


def from_chunks(y, T):
    """(B, H, nc, L, N) -> (B, T, H, N)."""
    B, H, nc, L, N = y.shape
    return y.permute(0, 2, 3, 1, 4).reshape(B, nc * L, H, N)[:, :T]


def inv_unit_lower(A):
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



# ----------------------------------------------------------------------------- the chunk loop
def carry(S, decay, Q, UV, BK, Wt=None):
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
    """`carry` with a hand-written backward: the states entering each chunk are saved as one
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


def empty_result(r, state, dt):
    B, T, H, N = r.shape
    return r.new_zeros(B, 0, H, N), initial_state(state, B, H, N, r.new_zeros((), dtype=dt))


# ----------------------------------------------------------------------------- the chunk algebra
def wkv7_from_couplings(r_, k_, v_, a_, b_, A_ab, A_ak, A_r, decays, state, T, out_dtype):
    """RWKV-7 per chunk with incoming state S0, given the couplings A_ab, A_ak (a_t to b_s, k_s,
    s < t) and A_r = [A_rb, A_rk] (r_t to them, s <= t) and decays = (e^{G}, e^{G_{t-1}},
    e^{G_L}, e^{G_L - G}). Rows u_t = S_{t-1} a_t solve
        (I - A_ab) U = A_ak V + (a * e^{Gp}) S0^T.
    Split U = U0 + W S0^T with (I - A_ab) U0 = A_ak V and (I - A_ab) W = a * e^{Gp}, so every
    state-free part is solved for all chunks at once and the chunk loop is a few small matmuls:
        S_new = S0 diag(e^{G_L}) + (S0 W^T + U0^T) Bt + V^T Kt,   Bt, Kt = b, k scaled by e^{G_L - G}
        Y = A_rk V + A_rb U0 + (A_rb W + r * e^{G}) S0^T.
    Returns (y (B, T, H, N) in out_dtype, final state)."""
    B, H, _, L, N = r_.shape
    eG, eGp, eGL, eGLmG = decays
    rhs = torch.cat((A_ak @ v_, a_ * eGp), -1)
    U0, W = (inv_unit_lower(A_ab) @ rhs).split(N, -1)
    # S_new = S0 diag(e^{G_L}) + (S0 W^T + U0^T) Bt + V^T Kt, as one product [.., V^T] [Bt; Kt]
    BK = torch.cat((b_, k_), -2) * eGLmG.repeat(1, 1, 1, 2, 1)
    Uv = torch.cat((U0, v_), -2)
    Wt = F.pad(W, (0, 0, 0, L)).transpose(-1, -2)
    Q = A_r[..., :L] @ W + r_ * eG
    S0 = initial_state(state, B, H, N, r_)
    y_state, S = carry(S0, eGL, Q, Uv.transpose(-1, -2), BK, Wt)
    y = A_r @ Uv + y_state
    return from_chunks(y, T).to(out_dtype), S


def wkv6_from_couplings(r_, k_, v_, u_, A, eGp, eGL, eGLmG, state, T, out_dtype):
    """RWKV-6 per chunk with incoming state S0, given A[t, s] (r_t to k_s, s < t):
        y_t = (r_t * e^{G_{t-1}}) S0^T + sum_{s<t} A[t, s] v_s + (r_t . (u * k_t)) v_t,
        S_new = S0 diag(e^{G_L}) + V^T (k * e^{G_L - G}).
    Returns (y (B, T, H, N) in out_dtype, final state)."""
    B, H, _, _, N = r_.shape
    A = A + torch.diag_embed((r_ * u_ * k_).sum(-1))
    S0 = initial_state(state, B, H, N, r_)
    y_state, S = carry(S0, eGL, r_ * eGp, v_.transpose(-1, -2), k_ * eGLmG)
    y = A @ v_ + y_state
    return from_chunks(y, T).to(out_dtype), S
