"""`--op cuda` without a GPU: the wrapper's padding / layout / state / autograd code, and the
kernel's backward algorithm (state checkpoints every 16 steps, step inversion between them),
run on CPU through a torch transcription of wkv7.cu (`KernelEmulator`), against the sequential
reference. The real kernel is checked against the same reference in test_gpu.py."""
from __future__ import annotations

import math

import pytest
import torch

from rwkvft.errors import UserError
from rwkvft.kernels import resolve_op, wkv7
from rwkvft.kernels.cuda import CHUNK_LEN, build_dir, wkv7_cuda
from rwkvft.kernels.reference import wkv7_reference


class KernelEmulator:
    """torch.ops.rwkvft_wkv7 in torch: same arguments, layouts and algorithm as wkv7.cu.

    States are indexed [value i, key j]; the checkpoint buffer is stored [key][value] as in the
    kernel. Both copies of the running gradient (column and row) are kept, as the kernel does.
    """

    def __init__(self):
        self.calls = []

    def forward(self, r, lw, k, v, a, b, s0):
        self.calls.append(dict(T=r.shape[1], dtypes=(r.dtype, lw.dtype, s0.dtype),
                               contiguous=all(x.is_contiguous() for x in (r, lw, k, v, a, b, s0))))
        assert r.shape[1] % CHUNK_LEN == 0 and lw.dtype == torch.float32 and s0.dtype == torch.float32
        io, T = r.dtype, r.shape[1]
        r, k, v, a, b = (x.float() for x in (r, k, v, a, b))
        d = lw.exp()
        S = s0.clone()
        ys, sas, ckpt = [], [], []
        for t in range(T):
            sa = torch.einsum("bhij,bhj->bhi", S, a[:, t])
            S = S * d[:, t, :, None, :] + sa[..., :, None] * b[:, t, :, None, :] + v[:, t, :, :, None] * k[:, t, :, None, :]
            ys.append(torch.einsum("bhij,bhj->bhi", S, r[:, t]))
            sas.append(sa)
            if (t + 1) % CHUNK_LEN == 0:
                ckpt.append(S.transpose(-1, -2).clone())   # [key][value]
        y = torch.stack(ys, 1).to(io)
        return [y, S, torch.stack(sas, 1), torch.stack(ckpt, 2)]

    def backward(self, r, lw, k, v, a, b, s0, sa, ckpt, dy, dsT):
        io = r.dtype
        r, k, v, a, b, g_all = (x.float() for x in (r, k, v, a, b, dy))
        d_all = lw.exp()
        T = r.shape[1]
        S = ckpt[:, :, -1].transpose(-1, -2)          # S_T[j, i]
        dSc, dSr = dsT.clone(), dsT.clone()           # column copy and row copy of the gradient
        grads = {n: [None] * T for n in ("dr", "dlw", "dk", "dv", "da", "db")}
        for t in reversed(range(T)):
            rt, kt, vt, at, bt, gt, dt, ut = (x[:, t] for x in (r, k, v, a, b, g_all, d_all, sa))
            grads["dr"][t] = torch.einsum("bhji,bhj->bhi", S, gt)
            if t % CHUNK_LEN == 0:
                S = s0 if t == 0 else ckpt[:, :, t // CHUNK_LEN - 1].transpose(-1, -2)
            else:   # invert step t
                S = (S - vt[..., :, None] * kt[..., None, :] - ut[..., :, None] * bt[..., None, :]) / dt[..., None, :]
            dSc = dSc + gt[..., :, None] * rt[..., None, :]
            dSr = dSr + gt[..., :, None] * rt[..., None, :]
            grads["dv"][t] = torch.einsum("bhij,bhj->bhi", dSr, kt)
            q = torch.einsum("bhij,bhj->bhi", dSr, bt)
            grads["dk"][t] = torch.einsum("bhji,bhj->bhi", dSc, vt)
            grads["db"][t] = torch.einsum("bhji,bhj->bhi", dSc, ut)
            grads["dlw"][t] = (dSc * S).sum(-2) * dt
            grads["da"][t] = torch.einsum("bhji,bhj->bhi", S, q)
            dSc = dSc * dt[..., None, :] + q[..., :, None] * at[..., None, :]
            dSr = dSr * dt[..., None, :] + q[..., :, None] * at[..., None, :]
        out = {n: torch.stack(v_, 1) for n, v_ in grads.items()}
        return [out["dr"].to(io), out["dlw"], out["dk"].to(io), out["dv"].to(io),
                out["da"].to(io), out["db"].to(io), dSc]


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


def _loss(y, S):
    return (y ** 2 - torch.tanh(y)).sum() + (S * S.flip(-1)).sum()


@pytest.mark.parametrize("T", [5, 16, 37])
def test_wrapper_matches_reference_forward_state_and_gradients(T):
    xs, s0 = rwkv7_inputs(2, T, 2, seed=T)
    emu = KernelEmulator()
    leaves = [x.clone().requires_grad_() for x in xs + [s0]]
    y, S = wkv7_cuda(*leaves[:6], leaves[6], ops=emu)
    _loss(y, S).backward()
    ref = [x.clone().requires_grad_() for x in xs + [s0]]
    y_ref, S_ref = wkv7_reference(*ref[:6], ref[6])
    _loss(y_ref, S_ref).backward()

    assert emu.calls[0]["T"] == T + (-T) % 16 and emu.calls[0]["contiguous"]
    assert y.shape == y_ref.shape and y.dtype == torch.float64 and S.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(S.double(), S_ref, rtol=1e-5, atol=1e-5)
    for name, got, want in zip(("r", "log_w", "k", "v", "a", "b", "state"), leaves, ref):
        scale = want.grad.abs().max().item()
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=0, atol=1e-4 * scale, msg=name)


def test_unused_final_state_and_no_initial_state():
    xs, _ = rwkv7_inputs(1, 20, 1, seed=3)
    leaves = [x.clone().requires_grad_() for x in xs]
    y, _ = wkv7_cuda(*leaves, None, ops=KernelEmulator())
    y.sum().backward()      # the final state gets no gradient: the Function sees None
    ref = [x.clone().requires_grad_() for x in xs]
    wkv7_reference(*ref)[0].sum().backward()
    for got, want in zip(leaves, ref):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=0, atol=1e-4 * want.grad.abs().max().item())


def test_bf16_inputs_run_in_bf16_with_fp32_decay_and_state():
    xs, s0 = rwkv7_inputs(1, 18, 2, seed=4, dtype=torch.float32)
    low = [x.to(torch.bfloat16) if i != 1 else x for i, x in enumerate(xs)]
    emu = KernelEmulator()
    y, S = wkv7_cuda(*low, s0, ops=emu)
    assert emu.calls[0]["dtypes"] == (torch.bfloat16, torch.float32, torch.float32)
    assert y.dtype == torch.bfloat16 and S.dtype == torch.float32
    y_ref, S_ref = wkv7_reference(*low, s0)
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2 * y_ref.float().abs().max().item())


def test_state_chains_across_calls():
    """Two calls carrying the state equal one call: the padding never leaks into the state."""
    xs, s0 = rwkv7_inputs(1, 30, 1, seed=5)
    y_all, S_all = wkv7_cuda(*xs, s0, ops=KernelEmulator())
    y1, S1 = wkv7_cuda(*(x[:, :13] for x in xs), s0, ops=KernelEmulator())
    y2, S2 = wkv7_cuda(*(x[:, 13:] for x in xs), S1, ops=KernelEmulator())
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_all, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(S2, S_all, rtol=1e-5, atol=1e-5)


def test_errors_on_cpu_and_wrong_head_size():
    xs, s0 = rwkv7_inputs(1, 4, 1, N=64, dtype=torch.float32)
    with pytest.raises(UserError, match="GPU"):
        wkv7(*xs, s0, op="cuda")
    xs32, s32 = rwkv7_inputs(1, 4, 1, N=32, dtype=torch.float32)
    with pytest.raises(UserError, match="head size 64"):
        wkv7_cuda(*xs32, s32, ops=KernelEmulator())


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
