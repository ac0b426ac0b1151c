"""WKV operators behind one interface.

All ops take per-head inputs of shape (B, T, H, N) and an optional initial state
(B, H, N, N) in the official [value, key] layout, and return (y, final_state):
y has shape (B, T, H, N) in the dtype of `r`; the state is always fp32.

RWKV-7 (x070):  wkv7(r, log_w, k, v, a, b, state, op)
    S_t = S_{t-1} diag(w_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T;  y_t = S_t r_t
    log_w = log of the per-channel decay (<= 0), fp32.
RWKV-6 / RWKV-5 (x060, x052):  wkv6(r, log_w, k, v, u, state, op)
    y_t = S_{t-1} r_t + (r_t . (u * k_t)) v_t;  S_t = S_{t-1} diag(w_t) + v_t k_t^T
    u = bonus (H, N) (`time_faaaa`); log_w <= 0 with no lower bound.

Ops are chosen by an explicit name; GPU ops are imported lazily, only when asked for:
`cuda` (our kernel, RWKV-7, head size 64), `fla` / `triton` (fla-core's chunked Triton ops).
`resolve_op` turns `auto` into the best op available here.
"""
from __future__ import annotations

import torch

from ..errors import UserError

CPU_OPS = ("chunked", "reference")
# The chunked op's fixed per-call work dwarfs a few sequential steps: RNN-style calls (one token
# at a time in generate) run the reference recurrence, which computes exactly the same thing.
SHORT_T = 4
GPU_OPS = ("cuda", "fla", "triton")
# Sequence lengths the GPU WKV kernel takes as they are: our CUDA kernel works in chunks of 16
# time steps (cuda.CHUNK_LEN; other lengths are padded to it on every call). The data pipeline
# pads each batch up to a multiple of this (data.collate.padded_length), so the kernel never re-pads.
SEQ_MULTIPLE = 16


def _bad_op(op: str) -> UserError:
    return UserError(f"unknown --op {op!r}; choose one of auto, {', '.join(CPU_OPS + GPU_OPS)}")


def op_available(op: str, version: str = "x070") -> tuple[bool, str]:
    """(True, '') when `op` can run a `version` model here, else (False, one-line reason).
    May build the CUDA extension (once per process, cached on disk)."""
    if op in CPU_OPS:
        return True, ""
    if op == "cuda":
        if version != "x070":
            return False, "the CUDA kernel is RWKV-7 only"
        from .cuda import available
        return available()
    if op in ("fla", "triton"):
        from .fla import available
        return available()
    raise _bad_op(op)


def resolve_op(op: str, on_gpu: bool, version: str = "x070") -> tuple[str, str]:
    """(the op to run, a one-line note for the log, '' when there is nothing to say).

    `auto` picks cuda (RWKV-7), then fla, then chunked on a GPU, saying why it fell back; on
    CPU it is chunked. An explicit GPU op that cannot run here is a UserError, before training.
    """
    if op == "auto":
        if not on_gpu:
            return "chunked", ""
        why = []
        for cand in (("cuda", "fla") if version == "x070" else ("fla",)):
            ok, reason = op_available(cand, version)
            if ok:
                return cand, (f"--op auto: using {cand} ({'; '.join(why)})" if why else "")
            why.append(f"{cand}: {reason}")
        return "chunked", f"--op auto: using chunked, the slow torch op ({'; '.join(why)})"
    if op in GPU_OPS:
        if not on_gpu:
            raise UserError(f"--op {op} needs an NVIDIA GPU; use --op chunked (or auto) on CPU")
        ok, reason = op_available(op, version)
        if not ok:
            raise UserError(f"--op {op} cannot run here: {reason}; use --op auto to fall back")
    elif op not in CPU_OPS:
        raise _bad_op(op)
    return op, ""


def wkv7(r, log_w, k, v, a, b, state: torch.Tensor | None = None, op: str = "chunked"):
    if op == "reference" or (op == "chunked" and r.shape[1] <= SHORT_T):
        from .reference import wkv7_reference
        return wkv7_reference(r, log_w, k, v, a, b, state)
    if op == "chunked":
        from .chunked import wkv7_chunked
        return wkv7_chunked(r, log_w, k, v, a, b, state)
    if op == "cuda":
        from .cuda import wkv7_cuda
        return wkv7_cuda(r, log_w, k, v, a, b, state)
    if op in ("fla", "triton"):
        from .fla import wkv7_fla
        return wkv7_fla(r, log_w, k, v, a, b, state)
    raise _bad_op(op)


def wkv6(r, log_w, k, v, u, state: torch.Tensor | None = None, op: str = "chunked"):
    if op == "reference" or (op == "chunked" and r.shape[1] <= SHORT_T):
        from .reference import wkv6_reference
        return wkv6_reference(r, log_w, k, v, u, state)
    if op == "chunked":
        from .chunked import wkv6_chunked
        return wkv6_chunked(r, log_w, k, v, u, state)
    if op in ("fla", "triton"):
        from .fla import wkv6_fla
        return wkv6_fla(r, log_w, k, v, u, state)
    if op == "cuda":
        raise UserError("--op cuda has no RWKV-6/5 kernel; use --op fla (GPU) or chunked")
    raise _bad_op(op)
