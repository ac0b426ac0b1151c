"""The chunked op's two forms: the factored one (kernels/chunked.py: pairwise decays as products
e^{Gc_t} e^{-Gc_s}, one matmul per coupling) and the log-space one (kernels/_stable.py, exact for
any log_w <= 0), and the per-call choice between them (`choose_form`).

The factored form must equal the sequential reference in float64 (y, final state, every input
gradient and the initial state's), be as accurate in fp32 as the log-space form, and run exactly
where its factors stay small: always for RWKV-7, for RWKV-6 only with mild decays.
"""
from __future__ import annotations

import math

import pytest
import torch

from rwkvft.kernels import _stable
from rwkvft.kernels.chunked import (FACTORED_LENS, MAX_SPREAD, choose_form, chunk_spread,
                                    wkv6_chunked, wkv7_chunked)
from rwkvft.kernels.reference import wkv6_reference, wkv7_reference

from test_kernels import (F32_REL_TOL, F64_TOL, assert_all_close, f32, f64, rwkv6_inputs,
                          rwkv7_inputs, run)
from wkv_cases import compare, wkv6_case, wkv7_case

# fp32 accuracy bound for the factored form, relative to the largest true value, worst over y,
# state and every gradient. Measured (T 100 and 256, seeds 0 and 1, typical and strongest RWKV-7
# decays): the log-space form at its chunk length 8 is off by 2.5e-7 to 4.0e-7, the factored form
# at 32 by 3.7e-7 to 5.0e-7 (16: 3.4e-7 to 4.5e-7). The bound is 2.5x the log-space form's worst;
# the test also checks that premise (the log-space form within half the bound) on each case.
FACTORED_F32_BOUND = 1e-6


def _mild6(B, T, H, N, seed=0, state=True, dtype=torch.float64):
    """RWKV-6 inputs whose decays keep the factored form at every length: log_w in [-0.6, 0]."""
    xs, S0 = rwkv6_inputs(B, T, H, N, seed=seed, state=state, dtype=dtype)
    xs[1] = -0.6 * torch.rand(xs[1].shape, generator=torch.Generator().manual_seed(seed),
                              dtype=dtype)
    return xs, S0


# ---------------------------------------------------------------------------- the choice
def test_chunk_spread_is_the_largest_decay_sum_of_any_chunk():
    log_w = torch.full((2, 10, 3, 4), -0.5)
    log_w[1, 4:8, 2, 1] = -3.0                     # the second chunk of 4 at one channel
    assert chunk_spread(log_w, 4) == pytest.approx(12.0)
    assert chunk_spread(log_w, 8) == pytest.approx(4 * 0.5 + 4 * 3.0)
    assert chunk_spread(log_w[:, 8:], 4) == pytest.approx(1.0)   # padding adds no decay
    assert chunk_spread(log_w[:, :0], 4) == 0.0


def test_rwkv7_always_takes_the_factored_form_at_the_longest_length():
    """RWKV-7's strongest decay, log_w = -e^-0.5 on every channel and step, stays in range."""
    xs = wkv7_case(64, strongest=True).xs
    assert choose_form(xs[1], None) == (True, FACTORED_LENS[0])
    assert FACTORED_LENS[0] * math.exp(-0.5) <= MAX_SPREAD
    assert choose_form(rwkv7_inputs(1, 50, 2, 8)[0][1], 5) == (True, 5)


def test_rwkv6_strong_decays_take_the_log_space_form():
    log_w = rwkv6_inputs(1, 40, 2, 8, strong=True)[0][1]          # down to -1e3
    assert choose_form(log_w, None) == (False, _stable.STABLE_CHUNK_LEN)
    assert choose_form(log_w, 16) == (False, 16)


def test_rwkv6_takes_the_longest_safe_length():
    log_w = torch.full((1, 64, 2, 8), -1.0)         # spread L: 32 too long, 16 fine
    assert choose_form(log_w, None) == (True, 16)
    assert choose_form(log_w * 2, None) == (True, 8)
    assert choose_form(log_w * 4, None) == (False, _stable.STABLE_CHUNK_LEN)


# ---------------------------------------------------------------------------- exact algebra
@pytest.mark.parametrize("B,T,H,L", [(1, 1, 1, 32), (2, 7, 2, 4), (1, 33, 3, 16), (2, 70, 2, 32),
                                     (3, 64, 1, 8)])
@pytest.mark.parametrize("with_state", [False, True])
def test_factored_rwkv7_equals_reference_float64(B, T, H, L, with_state):
    xs, S0 = rwkv7_inputs(B, T, H, 8, seed=T + L, state=with_state)
    assert choose_form(xs[1], L) == (True, L)
    assert_all_close(run(wkv7_chunked, xs, S0, chunk_len=L), run(wkv7_reference, xs, S0),
                     atol=F64_TOL)


@pytest.mark.parametrize("B,T,H,L", [(1, 1, 1, 32), (2, 7, 2, 4), (1, 33, 3, 16), (2, 70, 2, 32)])
@pytest.mark.parametrize("with_state", [False, True])
def test_factored_rwkv6_equals_reference_float64(B, T, H, L, with_state):
    xs, S0 = _mild6(B, T, H, 8, seed=T + L, state=with_state)
    assert choose_form(xs[1], L) == (True, L)
    assert_all_close(run(wkv6_chunked, xs, S0, chunk_len=L), run(wkv6_reference, xs, S0),
                     atol=F64_TOL)


def test_strong_rwkv6_decays_stay_exact_at_the_default_choice():
    xs, S0 = rwkv6_inputs(2, 45, 2, 8, seed=3, strong=True)
    assert_all_close(run(wkv6_chunked, xs, S0), run(wkv6_reference, xs, S0), atol=F64_TOL)


# ---------------------------------------------------------------------------- fp32 accuracy
@pytest.mark.parametrize("T,strongest,seed", [(100, False, 0), (100, True, 1), (256, False, 1),
                                              (256, True, 0)])
def test_factored_rwkv7_fp32_is_as_accurate_as_the_log_space_form(T, strongest, seed):
    case = wkv7_case(T, strongest=strongest, seed=seed)
    assert choose_form(case.xs[1], None) == (True, FACTORED_LENS[0])
    new = compare(wkv7_chunked, wkv7_reference, case)
    old = compare(_stable.wkv7_stable, wkv7_reference, case)
    assert max(old.values()) <= FACTORED_F32_BOUND / 2          # the bound's premise
    assert max(new.values()) <= FACTORED_F32_BOUND, new


def test_factored_rwkv6_fp32_accuracy():
    case = wkv6_case(100)                               # log_w = -exp(x - 2): factored at L 8
    assert choose_form(case.xs[1], None)[0]
    assert max(compare(wkv6_chunked, wkv6_reference, case).values()) <= FACTORED_F32_BOUND


@pytest.mark.parametrize("L", [8, 32])
def test_factors_at_the_spread_limit_stay_finite_and_accurate(L):
    """Decays at exactly MAX_SPREAD per chunk: the largest factors the form admits, and masked
    (t < s) products of e^{MAX_SPREAD} that must not leak into y or any gradient."""
    xs, S0 = rwkv6_inputs(2, 3 * L, 2, 16, seed=9)
    xs[1] = torch.full_like(xs[1], -MAX_SPREAD / L)
    assert choose_form(xs[1].float(), L) == (True, L)
    got = run(wkv6_chunked, *f32(xs, S0), chunk_len=L)
    assert all(torch.isfinite(t).all() for t in got)
    assert_all_close(got, run(wkv6_reference, *f64(xs, S0)), rel=F32_REL_TOL)


def test_no_grad_forward_matches_the_autograd_one():
    """Eval and generation run the op under no_grad (the carry skips its saved states)."""
    xs, S0 = rwkv7_inputs(1, 40, 2, 8, dtype=torch.float32)
    with torch.no_grad():
        y0, S_0 = wkv7_chunked(*xs, S0)
    y1, S_1 = wkv7_chunked(*(x.requires_grad_() for x in xs), S0)
    torch.testing.assert_close(y0, y1.detach(), rtol=0, atol=0)
    torch.testing.assert_close(S_0, S_1.detach(), rtol=0, atol=0)
