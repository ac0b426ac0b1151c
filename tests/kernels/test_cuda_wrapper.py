"""`--op cuda` without a GPU: the wrapper's edges (unused final state, no initial state, bf16
dtypes, state carried across calls, errors) with wkv7.cu's real kernel bodies on CPU threads as
the `ops` (kernel_ops, tests/kernels/conftest.py; the numerical sweep is test_cuda_on_cpu.py),
and `--op auto` resolution. The kernel on the GPU is checked in test_gpu.py."""
from __future__ import annotations

import math

import pytest
import torch

from cuda_on_cpu import cxx, kernel_lib, kernel_ops  # noqa: F401 (fixtures)
from rwkvft.errors import UserError
from rwkvft.kernels import resolve_op, wkv7
from rwkvft.kernels.cuda import build_dir, wkv7_cuda
from rwkvft.kernels.reference import wkv7_reference


def rwkv7_inputs(B, T, H, N=64, seed=0, dtype=torch.float64):
    """Test-recipe inputs (gpu_playbook §2.2): r, k, v in +-3-ish, the RWKV-7 decay range,
    a = -kappa, b = kappa * eta with kappa L2-normalised."""
    g = torch.Generator().manual_seed(seed)
    r, k, v = (torch.randn(B, T, H, N, generator=g, dtype=dtype) for _ in range(3))
    log_w = -math.exp(-0.5) * torch.sigmoid(torch.randn(B, T, H, N, generator=g, dtype=dtype) * 3)
    kappa = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g, dtype=dtype), dim=-1)
    eta = torch.sigmoid(torch.randn(B, T, H, N, generator=g, dtype=dtype))
    s0 = torch.randn(B, H, N, N, generator=g, dtype=dtype) * 0.5
    return [r, log_w, k, v, -kappa, kappa * eta], s0


def test_unused_final_state_and_no_initial_state(kernel_ops):
    xs, _ = rwkv7_inputs(1, 20, 1, seed=3)
    leaves = [x.clone().requires_grad_() for x in xs]
    y, _ = wkv7_cuda(*leaves, None, ops=kernel_ops)
    y.sum().backward()      # the final state gets no gradient: the Function sees None
    ref = [x.clone().requires_grad_() for x in xs]
    wkv7_reference(*ref)[0].sum().backward()
    for got, want in zip(leaves, ref):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=0, atol=1e-4 * want.grad.abs().max().item())


def test_bf16_inputs_run_in_bf16_with_fp32_decay_and_state(kernel_ops):
    xs, s0 = rwkv7_inputs(1, 18, 2, seed=4, dtype=torch.float32)
    low = [x.to(torch.bfloat16) if i != 1 else x for i, x in enumerate(xs)]
    y, S = wkv7_cuda(*low, s0, ops=kernel_ops)
    assert kernel_ops.calls[0]["dtypes"] == (torch.bfloat16, torch.float32, torch.float32)
    assert y.dtype == torch.bfloat16 and S.dtype == torch.float32
    y_ref, S_ref = wkv7_reference(*low, s0)
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2 * y_ref.float().abs().max().item())


def test_state_chains_across_calls(kernel_ops):
    """Two calls carrying the state equal one call: the padding never leaks into the state."""
    xs, s0 = rwkv7_inputs(1, 30, 1, seed=5)
    y_all, S_all = wkv7_cuda(*xs, s0, ops=kernel_ops)
    y1, S1 = wkv7_cuda(*(x[:, :13] for x in xs), s0, ops=kernel_ops)
    y2, S2 = wkv7_cuda(*(x[:, 13:] for x in xs), S1, ops=kernel_ops)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_all, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(S2, S_all, rtol=1e-5, atol=1e-5)


def test_errors_on_cpu_and_wrong_head_size():
    xs, s0 = rwkv7_inputs(1, 4, 1, N=64, dtype=torch.float32)
    with pytest.raises(UserError, match="GPU"):
        wkv7(*xs, s0, op="cuda")
    xs32, s32 = rwkv7_inputs(1, 4, 1, N=32, dtype=torch.float32)
    with pytest.raises(UserError, match="head size 64"):
        wkv7_cuda(*xs32, s32, ops=object())   # refused before any kernel call


def test_resolve_op_on_cpu():
    assert resolve_op("auto", on_gpu=False) == ("chunked", "")
    assert resolve_op("reference", on_gpu=False) == ("reference", "")
    for op in ("cuda", "fla", "triton"):
        with pytest.raises(UserError, match="needs an NVIDIA GPU"):
            resolve_op(op, on_gpu=False)
    with pytest.raises(UserError, match="unknown --op"):
        resolve_op("fast", on_gpu=False)


def test_resolve_auto_falls_back_with_a_reason(monkeypatch):
    import rwkvft.kernels.cuda as cuda_mod
    import rwkvft.kernels.fla as fla_mod
    monkeypatch.setattr(cuda_mod, "available", lambda: (False, "nvcc was not found"))
    monkeypatch.setattr(fla_mod, "available", lambda: (False, "fla-core is not installed"))
    op, note = resolve_op("auto", on_gpu=True)
    assert op == "chunked" and "nvcc was not found" in note and "fla-core" in note and "\n" not in note
    monkeypatch.setattr(fla_mod, "available", lambda: (True, ""))
    op, note = resolve_op("auto", on_gpu=True)
    assert op == "fla" and "cuda: nvcc was not found" in note
    assert resolve_op("auto", on_gpu=True, version="x060")[0] == "fla"   # no RWKV-6 CUDA kernel
    with pytest.raises(UserError, match="cannot run here: nvcc"):
        resolve_op("cuda", on_gpu=True)


def test_build_dir_is_keyed_by_source_and_versions():
    d = build_dir()
    assert d.parent.name == "rwkvft" and d.name.startswith("wkv7-") and len(d.name) == len("wkv7-") + 16
