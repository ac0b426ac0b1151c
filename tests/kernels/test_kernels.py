"""WKV ops: the chunked CPU forms against the sequential references (forward and gradients).

Two kinds of checks:
- float64 runs of both: the chunked algebra is exact, so they agree to ~1e-12; any bug in the
  chunk maths (a wrong decay exponent, a dropped term, a wrong padding) shows up at O(1).
- fp32 runs against a float64 run of the reference as the truth: the fp32 reference itself is
  off by ~3e-7 of the output scale (about 5 fp32 ulps, accumulated over the sequence); the
  chunked op must stay within 4e-6 of scale, i.e. no worse than ~10x the reference's own error.
"""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from rwkvft.errors import UserError
from rwkvft.kernels import wkv6, wkv7
from rwkvft.kernels.chunked import choose_form, wkv6_chunked, wkv7_chunked
from rwkvft.kernels.reference import wkv6_reference, wkv7_reference

F64_TOL = 1e-10      # exact algebra, float64 rounding only
F32_REL_TOL = 4e-6   # relative to the largest magnitude of the true value


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def rwkv7_inputs(B, T, H, N, seed=0, state=True, dtype=torch.float64):
    """Realistic RWKV-7 inputs (spec §1.2): a = -k̂, b = k̂*eta, log_w = -e^-0.5 sigmoid(z)."""
    g = _gen(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g, dtype=dtype) for _ in range(3))
    kappa = F.normalize(torch.randn(B, T, H, N, generator=g, dtype=dtype), dim=-1)
    eta = torch.rand(B, T, H, N, generator=g, dtype=dtype)
    log_w = -0.6065306597 * torch.sigmoid(2 * torch.randn(B, T, H, N, generator=g, dtype=dtype))
    S0 = torch.randn(B, H, N, N, generator=g, dtype=dtype) if state else None
    return [r, log_w, k, v, -kappa, kappa * eta], S0


def rwkv6_inputs(B, T, H, N, seed=0, state=True, dtype=torch.float64, strong=False):
    """RWKV-6 inputs; log_w = -exp(w_ll) with w_ll in [-9, 2], or with `strong` a mix of
    decays from -1e-4 to -1e3 (the decay has no lower bound in RWKV-6)."""
    g = _gen(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g, dtype=dtype) for _ in range(3))
    lo, hi = (-9.2, 6.9) if strong else (-9.0, 2.0)
    log_w = -torch.exp(torch.empty(B, T, H, N, dtype=dtype).uniform_(lo, hi, generator=g))
    if strong:  # whole steps of near-total forgetting next to near-perfect memory
        pick = torch.rand(B, T, H, N, generator=g, dtype=dtype)
        log_w = torch.where(pick < 0.1, -1e3, torch.where(pick > 0.8, -1e-4, log_w))
    u = torch.randn(H, N, generator=g, dtype=dtype)
    S0 = torch.randn(B, H, N, N, generator=g, dtype=dtype) if state else None
    return [r, log_w, k, v, u], S0


def run(fn, xs, S0, seed=123, **kw):
    """Forward plus gradients of a random linear functional of (y, final state)."""
    leaves = [x.detach().clone().requires_grad_() for x in xs]
    S = None if S0 is None else S0.detach().clone().requires_grad_()
    y, S_T = fn(*leaves, S, **kw)
    g = _gen(seed)
    loss = (y.double() * torch.randn(y.shape, generator=g, dtype=torch.float64)).sum() \
        + (S_T.double() * torch.randn(S_T.shape, generator=g, dtype=torch.float64)).sum()
    grads = torch.autograd.grad(loss, leaves + ([S] if S is not None else []))
    return [y.detach(), S_T.detach(), *grads]


def assert_all_close(got, want, rel=None, atol=None):
    names = ["y", "state"] + [f"grad{i}" for i in range(len(want) - 2)]
    for name, a, b in zip(names, got, want):
        a, b = a.double(), b.double()
        err = (a - b).abs().max().item()
        bound = atol if atol is not None else rel * max(b.abs().max().item(), 1e-30)
        assert err <= bound, f"{name}: max error {err:.3e} > {bound:.3e}"


def f64(xs, S0):
    return [x.double() for x in xs], None if S0 is None else S0.double()


def f32(xs, S0):
    return [x.float() for x in xs], None if S0 is None else S0.float()


# ---------------------------------------------------------------------------- exact algebra
@pytest.mark.parametrize("T", [1, 7, 16, 33])
@pytest.mark.parametrize("chunk_len", [1, 4, 16])
@pytest.mark.parametrize("with_state", [False, True])
def test_wkv7_chunked_equals_reference_float64(T, chunk_len, with_state):
    xs, S0 = rwkv7_inputs(2, T, 2, 8, seed=T, state=with_state)
    want = run(wkv7_reference, xs, S0)
    got = run(wkv7_chunked, xs, S0, chunk_len=chunk_len)
    assert_all_close(got, want, atol=F64_TOL)


@pytest.mark.parametrize("T", [1, 7, 16, 33])
@pytest.mark.parametrize("chunk_len", [1, 4, 16])
@pytest.mark.parametrize("with_state", [False, True])
def test_wkv6_chunked_equals_reference_float64(T, chunk_len, with_state):
    xs, S0 = rwkv6_inputs(2, T, 2, 8, seed=T, state=with_state, strong=T > 10)
    want = run(wkv6_reference, xs, S0)
    got = run(wkv6_chunked, xs, S0, chunk_len=chunk_len)
    assert_all_close(got, want, atol=F64_TOL)


@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 2), T=st.integers(1, 40), H=st.integers(1, 3), N=st.integers(1, 9),
       chunk_len=st.integers(1, 24), seed=st.integers(0, 2**16))
def test_chunked_any_shape_float64(B, T, H, N, chunk_len, seed):
    xs, S0 = rwkv7_inputs(B, T, H, N, seed=seed)
    for got, want in zip(wkv7_chunked(*xs, S0, chunk_len=chunk_len), wkv7_reference(*xs, S0)):
        assert (got - want).abs().max().item() <= F64_TOL
    xs, S0 = rwkv6_inputs(B, T, H, N, seed=seed, strong=True)
    for got, want in zip(wkv6_chunked(*xs, S0, chunk_len=chunk_len), wkv6_reference(*xs, S0)):
        assert (got - want).abs().max().item() <= F64_TOL


# ---------------------------------------------------------------------------- fp32 accuracy
@pytest.mark.parametrize("with_state", [False, True])
def test_wkv7_chunked_fp32_accuracy(with_state):
    xs, S0 = rwkv7_inputs(2, 100, 2, 64, seed=5, state=with_state)
    truth = run(wkv7_reference, *f64(xs, S0))
    got = run(wkv7_chunked, *f32(xs, S0))
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    assert_all_close(got, truth, rel=F32_REL_TOL)


@pytest.mark.parametrize("chunk_len", [16, 64])
@pytest.mark.parametrize("strong", [False, True])
def test_wkv6_chunked_fp32_accuracy_strong_decay(chunk_len, strong):
    """log_w down to -1e3 next to -1e-4: log-space differences keep every exponent <= 0 and
    avoid cancellation between long cumulative sums."""
    xs, S0 = rwkv6_inputs(2, 100, 2, 64, seed=6, strong=strong)
    truth = run(wkv6_reference, *f64(xs, S0))
    got = run(wkv6_chunked, *f32(xs, S0), chunk_len=chunk_len)
    assert all(torch.isfinite(t).all() for t in got)
    assert_all_close(got, truth, rel=F32_REL_TOL)


def test_wkv6_extreme_decay_is_finite():
    """A decay of exp(-exp(5)) per step and harder must neither overflow nor give NaN grads."""
    xs, S0 = rwkv6_inputs(1, 40, 2, 16, seed=7)
    xs[1] = torch.full_like(xs[1], -5e4)
    xs[1][:, ::3] = -1e-6
    truth = run(wkv6_reference, *f64(xs, S0))
    got = run(wkv6_chunked, *f32(xs, S0), chunk_len=32)
    assert all(torch.isfinite(t).all() for t in got)
    assert_all_close(got, truth, rel=F32_REL_TOL)


# ---------------------------------------------------------------------------- state carrying
@pytest.mark.parametrize("version", ["x070", "x060"])
def test_pieces_carrying_state_equal_one_pass(version):
    fn, make = (wkv7_chunked, rwkv7_inputs) if version == "x070" else (wkv6_chunked, rwkv6_inputs)
    xs, S0 = make(1, 70, 2, 16, seed=8, dtype=torch.float32)
    y_all, S_all = fn(*xs, S0)
    ys, S = [], S0
    for lo, hi in [(0, 23), (23, 24), (24, 57), (57, 70)]:
        y, S = fn(*(x[:, lo:hi] if x.dim() == 4 else x for x in xs), S)
        ys.append(y)
    torch.testing.assert_close(torch.cat(ys, 1), y_all, rtol=0, atol=2e-5 * y_all.abs().max().item())
    torch.testing.assert_close(S, S_all, rtol=0, atol=2e-5 * S_all.abs().max().item())


# ---------------------------------------------------------------------------- interface
def test_dispatch_and_errors():
    xs, S0 = rwkv7_inputs(1, 5, 2, 4, dtype=torch.float32)
    y_ref, S_ref = wkv7(*xs, S0, op="reference")
    y_ch, S_ch = wkv7(*xs, S0, op="chunked")
    torch.testing.assert_close(y_ch, y_ref, rtol=1e-5, atol=1e-5)
    xs6, S06 = rwkv6_inputs(1, 5, 2, 4, dtype=torch.float32)
    torch.testing.assert_close(wkv6(*xs6, S06, op="chunked")[0], wkv6(*xs6, S06, op="reference")[0],
                               rtol=1e-5, atol=1e-5)
    for fn, args in [(wkv7, (*xs, S0)), (wkv6, (*xs6, S06))]:
        with pytest.raises(UserError, match="unknown --op"):
            fn(*args, op="fast")
        with pytest.raises(UserError, match="GPU"):
            fn(*args, op="cuda")


@pytest.mark.parametrize("fn,make", [(wkv7_chunked, rwkv7_inputs), (wkv6_chunked, rwkv6_inputs)])
def test_bf16_inputs_give_bf16_y_and_fp32_state(fn, make):
    xs, S0 = make(1, 20, 2, 8, dtype=torch.float32)
    y32, S32 = fn(*xs, S0)
    low = [x.to(torch.bfloat16) if i != 1 else x for i, x in enumerate(xs)]   # log_w stays fp32
    y, S = fn(*low, S0)
    assert y.dtype == torch.bfloat16 and S.dtype == torch.float32
    assert (y.float() - y32).abs().max() <= 0.05 * y32.abs().max()


@pytest.mark.parametrize("fn,make", [(wkv7_chunked, rwkv7_inputs), (wkv6_chunked, rwkv6_inputs)])
def test_empty_sequence_returns_the_state(fn, make):
    xs, S0 = make(2, 0, 2, 4, dtype=torch.float32)
    y, S = fn(*xs, S0)
    assert y.shape == (2, 0, 2, 4)
    torch.testing.assert_close(S, S0)
    assert fn(*xs, None)[1].abs().max() == 0


@pytest.mark.parametrize("fn,make", [(wkv7_chunked, rwkv7_inputs), (wkv6_chunked, rwkv6_inputs)])
def test_gradients_under_bf16_autocast_stay_near_the_truth(fn, make):
    """bf16-mixed training runs the op under CPU autocast: the matmuls before the state carry
    come out in bf16 while the carry keeps fp32; forward and gradients must stay near the
    float64 truth (bf16 rounding only)."""
    xs, S0 = make(1, 40, 2, 8, seed=4, dtype=torch.float32)
    want = run(wkv7_reference if fn is wkv7_chunked else wkv6_reference, *f64(xs, S0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run(fn, xs, S0)
    assert got[1].dtype == torch.float32  # the final state
    assert_all_close(got, want, rel=0.05)


def _graph_nodes(t: torch.Tensor) -> int:
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(n for n, _ in node.next_functions)
    return len(seen)


def _rwkv6_mild_inputs(*args, **kw):
    """RWKV-6 inputs with RWKV-7-sized decays: the factored form at every length."""
    xs, S0 = rwkv6_inputs(*args, **kw)
    xs[1] = -0.6 * torch.sigmoid(xs[1])
    return xs, S0


@pytest.mark.parametrize("fn,make,factored", [
    (wkv7_chunked, rwkv7_inputs, True), (wkv6_chunked, _rwkv6_mild_inputs, True),
    (wkv6_chunked, functools.partial(rwkv6_inputs, strong=True), False)])
def test_autograd_graph_does_not_grow_with_the_sequence(fn, make, factored):
    """The loop over chunks is one node: under infctx the forward graph of a whole sample stays
    in host memory until the backward, so nodes per token would be memory per token. (Each of
    the op's two forms is checked with inputs that keep it in that form at both lengths.)"""
    def nodes(T):
        xs, S0 = make(1, T, 2, 8, dtype=torch.float32)
        assert choose_form(xs[1], None)[0] is factored
        y, S = fn(*(x.requires_grad_() for x in xs), S0.requires_grad_())
        return _graph_nodes(y.sum() + S.sum())
    assert nodes(64) == nodes(512)   # 2 and 16 chunks at the longest length
