"""`--op fla` (alias `triton`): fla-core's Triton chunked kernels (as the GPU playbook spec describes them).

Conventions that differ from ours, all handled here:
- `w` is the LOG decay (what we call log_w), not RWKV's log-log w; never pass -exp(log_w).
- `scale` must be 1.0: RWKV does not scale r by N^-1/2 (chunk_rwkv6's default does).
- states are (B, H, K, V), the transpose of our [value, key] layout, in and out.
- inputs are (B, T, H, K), as ours; no `head_first` argument (removed in fla-core 0.6).
fla is imported lazily: it needs Triton and a GPU and is not a core dependency.
"""
from __future__ import annotations

import torch

from ..errors import UserError

INSTALL_HINT = "pip install 'rwkvft[fla]' (fla-core / flash-linear-attention; NVIDIA GPU with Triton)"


def _import(kind: str):
    try:
        if kind == "rwkv7":
            from fla.ops.rwkv7 import chunk_rwkv7 as fn
        else:
            from fla.ops.rwkv6 import chunk_rwkv6 as fn
    except ImportError as e:
        raise UserError(f"--op fla needs fla-core, which is not importable here ({e}); "
                        f"{INSTALL_HINT}, or use --op cuda / chunked") from None
    return fn


def available() -> tuple[bool, str]:
    """(True, '') when fla's RWKV-7 op can be used here, else (False, one-line reason)."""
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible"
    try:
        _import("rwkv7")
    except UserError:
        return False, f"fla-core is not installed ({INSTALL_HINT})"
    return True, ""


def _check(r) -> None:
    if not r.is_cuda:
        raise UserError("--op fla needs CUDA tensors on an NVIDIA GPU; use --op chunked on CPU")


def _state_in(state):
    return None if state is None else state.float().transpose(-1, -2).contiguous()


def wkv7_fla(r, log_w, k, v, a, b, state=None):
    """RWKV-7 WKV (contract of kernels.wkv7) with fla's chunk_rwkv7."""
    _check(r)
    chunk_rwkv7 = _import("rwkv7")
    # one dtype for r, k, v, a, b (under autocast kappa arrives in fp32, r in bf16); the log
    # decay stays fp32: fla upcasts it in every kernel, and its cumulative sums need it
    k, v, a, b = (x.to(r.dtype).contiguous() for x in (k, v, a, b))
    y, sT = chunk_rwkv7(r.contiguous(), log_w.float().contiguous(), k, v, a, b, scale=1.0,
                        initial_state=_state_in(state), output_final_state=True)
    return y.to(r.dtype), sT.float().transpose(-1, -2)


def wkv6_fla(r, log_w, k, v, u, state=None):
    """RWKV-6 / RWKV-5 WKV (contract of kernels.wkv6) with fla's chunk_rwkv6 (u = bonus (H, N))."""
    _check(r)
    chunk_rwkv6 = _import("rwkv6")
    H, N = r.shape[2], r.shape[3]
    y, sT = chunk_rwkv6(r.contiguous(), k.to(r.dtype).contiguous(), v.to(r.dtype).contiguous(),
                        log_w.float().contiguous(),
                        u.reshape(H, N).to(r.dtype).contiguous(), scale=1.0,
                        initial_state=_state_in(state), output_final_state=True)
    return y.to(r.dtype), sT.float().transpose(-1, -2)
