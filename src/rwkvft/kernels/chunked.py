"""Chunked pure-PyTorch WKV ops for CPU (the chunked form of the architecture spec).

The sequence is cut into chunks of L tokens. Everything inside a chunk that does not depend on
the incoming state is computed for all chunks at once with batched tensor ops; only a short loop
over chunks carries the (B, H, N, N) state (`_chunkcore.carry`, one autograd node).

The factored form (here). With G_t the sum of log decays over chunk steps 1..t, every intra-chunk
coupling is A[t, s] = sum_j x_t[j] y_s[j] e^{G_t - G_s}[j] (s <= t). Writing the pairwise decay as
the PRODUCT e^{Gc_t} e^{-Gc_s}, with Gc = G - G_L / 2 centred on the chunk, turns every coupling
into one (L x N) @ (N x L) matmul plus a triangular mask: no (L, L, N) pairwise tensors, a shallow
autograd graph, and chunks long enough that the state loop runs few times. It needs the factors
e^{+-Gc} to stay small: |Gc| <= spread / 2, spread = -G_L of the chunk. `choose_form` checks
that once per call; otherwise the log-space form (_stable.py) runs, exact for any log_w <= 0.

Why MAX_SPREAD = 24: the exponents are summed in float64 and rounded to fp32 once, so a factor
e^{Gc} carries a relative error of about |Gc| * 6e-8 <= 12 * 6e-8 = 7e-7, like the log-space
form's partial sums of similar size (tests measure both against float64), and e^{12} = 1.6e5 is
far from overflow, also in the masked (t < s) entries, which reach e^{24} before `torch.where`
drops them. RWKV-7's decay is bounded (log_w >= -e^-0.5, models/rwkv7.py), so its spread is at
most 0.6065 L = 19.4 at L = 32: RWKV-7 always takes this form at the longest chunk length.
RWKV-6 takes it when its decays are mild enough, at the longest length that allows it. Range is
not the only limit: the log_w gradient collects target and source contributions that cancel
exactly for s = t, so its absolute error stays ~ an ulp of the undecayed terms while its true
value shrinks with e^{log_w}. Measured at the limit with every step equal: -3 per step (chunk 8)
stays within the fp32 test bound; a limit of 64 (-8 per step, factors exponentiated in float64)
put that gradient 2e-4 (relative to its largest entry) off.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _stable
from ._chunkcore import empty_result, to_chunks, wkv6_from_couplings, wkv7_from_couplings
from .reference import compute_dtype

MAX_SPREAD = 24.0
# Chunk lengths the factored form tries, longest first: the first is chosen by measurement
# (benchmarks/bench_wkv_cpu.py, T=256 and 1024, H=12, N=64, fp32, 2 threads) and is always safe
# for RWKV-7; a shorter one still beats the log-space form for milder RWKV-6 decays.
FACTORED_LENS = (32, 16, 8)


def chunk_spread(log_w: torch.Tensor, chunk_len: int) -> float:
    """The largest -sum(log_w) over any chunk of `chunk_len` steps, head and channel: the range
    of the centred exponents is [-spread / 2, spread / 2]. log_w (B, T, H, N), <= 0."""
    B, T, H, N = log_w.shape
    if log_w.numel() == 0:
        return 0.0
    lw = F.pad(log_w.detach(), (0, 0, 0, 0, 0, (-T) % chunk_len))    # padding adds no decay
    return -lw.view(B, -1, chunk_len, H, N).sum(2, dtype=compute_dtype(log_w)).min().item()


def choose_form(log_w: torch.Tensor, chunk_len: int | None) -> tuple[bool, int]:
    """(factored?, chunk length) for these decays: the factored form at the first of
    FACTORED_LENS (or at `chunk_len` when given) whose chunk spread is <= MAX_SPREAD, else the
    log-space form at STABLE_CHUNK_LEN (or `chunk_len`). One reduction over log_w per length."""
    for L in (chunk_len,) if chunk_len else FACTORED_LENS:
        if chunk_spread(log_w, L) <= MAX_SPREAD:
            return True, L
    return False, chunk_len or _stable.STABLE_CHUNK_LEN


def _factors(ld):
    """From log decays ld (..., L, N): (eG, eGp, eGL, eGLmG, fT, fTp, fS), all (..., L, N) but eGL:
      eG = e^{G_t}, eGp = e^{G_{t-1}}, eGL = e^{G_L} (..., N), eGLmG = e^{G_L - G_s},
      fT = e^{Gc_t}, fTp = e^{Gc_{t-1}} (target factors), fS = e^{-Gc_s} (source factors),
    so e^{G_t - G_s} = fT[t] fS[s] and e^{G_{t-1} - G_s} = fTp[t] fS[s]."""
    G = ld.double().cumsum(-2)
    Gp = F.pad(G[..., :-1, :], (0, 0, 1, 0))
    GL = G[..., -1:, :]
    half = 0.5 * GL
    exps = (G, Gp, GL.squeeze(-2), GL - G, G - half, Gp - half, half - G)
    return tuple(torch.exp(x.to(ld.dtype)) for x in exps)


def _masks(L, device):
    """(lower incl. diagonal, strictly lower) boolean (L, L) masks, [t, s]."""
    incl = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    return incl, incl.tril(-1)


# ----------------------------------------------------------------------------- RWKV-7
def _wkv7_factored(r, log_w, k, v, a, b, state, L):
    """RWKV-7 in the factored form (the chunk algebra: `_chunkcore.wkv7_from_couplings`).
    A_ab, A_ak couple a_t to b_s, k_s (s < t, decay e^{G_{t-1} - G_s}); A_rb, A_rk couple r_t
    to them (s <= t, decay e^{G_t - G_s}): one (2L x N) @ (N x 2L) product gives all four."""
    dt = compute_dtype(r)
    r_, ld, k_, v_, a_, b_ = (to_chunks(x, L, dt) for x in (r, log_w, k, v, a, b))
    eG, eGp, eGL, eGLmG, fT, fTp, fS = _factors(ld)
    targets = torch.cat((a_ * fTp, r_ * fT), -2)                      # rows: a_t, r_t
    sources = torch.cat((b_ * fS, k_ * fS), -2)                       # rows: b_s, k_s
    incl, strict = _masks(L, r_.device)
    mask = torch.cat((torch.cat((strict, strict), 1), torch.cat((incl, incl), 1)), 0)
    M = torch.where(mask, targets @ sources.transpose(-1, -2), 0.0)
    A_ab, A_ak, A_r = M[..., :L, :L], M[..., :L, L:], M[..., L:, :]   # A_r = [A_rb, A_rk]
    return wkv7_from_couplings(r_, k_, v_, a_, b_, A_ab, A_ak, A_r, (eG, eGp, eGL, eGLmG), state,
                               r.shape[1], r.dtype)


def wkv7_chunked(r, log_w, k, v, a, b, state=None, chunk_len: int | None = None):
    """RWKV-7 WKV (same contract as `wkv7_reference`), chunked: the factored form where
    `choose_form` allows it (always, for RWKV-7's decay range), else the log-space form.
    chunk_len None lets `choose_form` pick it."""
    if r.shape[1] == 0:
        return empty_result(r, state, compute_dtype(r))
    factored, L = choose_form(log_w, chunk_len)
    return (_wkv7_factored if factored else _stable.wkv7_stable)(r, log_w, k, v, a, b, state, L)


# ----------------------------------------------------------------------------- RWKV-6 / 5
def _wkv6_factored(r, log_w, k, v, u, state, L):
    """RWKV-6 in the factored form (the chunk algebra: `_chunkcore.wkv6_from_couplings`):
        A[t, s] = sum_j (r_t e^{Gc_{t-1}})[j] (k_s e^{-Gc_s})[j]."""
    dt = compute_dtype(r)
    r_, ld, k_, v_ = (to_chunks(x, L, dt) for x in (r, log_w, k, v))
    _, eGp, eGL, eGLmG, _, fTp, fS = _factors(ld)
    _, strict = _masks(L, r_.device)
    A = torch.where(strict, (r_ * fTp) @ (k_ * fS).transpose(-1, -2), 0.0)
    return wkv6_from_couplings(r_, k_, v_, u.to(dt).reshape(-1, 1, 1, r.shape[-1]), A, eGp, eGL,
                               eGLmG, state, r.shape[1], r.dtype)


def wkv6_chunked(r, log_w, k, v, u, state=None, chunk_len: int | None = None):
    """RWKV-6 WKV (same contract as `wkv6_reference`), chunked, exact for any log_w <= 0:
    the factored form where `choose_form` allows it, else the log-space form."""
    if r.shape[1] == 0:
        return empty_result(r, state, compute_dtype(r))
    factored, L = choose_form(log_w, chunk_len)
    return (_wkv6_factored if factored else _stable.wkv6_stable)(r, log_w, k, v, u, state, L)
