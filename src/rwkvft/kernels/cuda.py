"""`--op cuda`: our own RWKV-7 WKV CUDA kernel (kernels/cuda/wkv7.cu), forward and backward.

The extension is JIT-compiled with torch.utils.cpp_extension on first use and cached under
~/.cache/rwkvft/, in a folder named by a hash of the source, the build flags and the
torch / CUDA versions, so a new torch or an edited kernel never reuses a stale build.

The kernel wants (B, T, H, 64) contiguous inputs with T % 16 == 0, bf16 or fp32 r/k/v/a/b, an
fp32 log decay and an fp32 initial state. `wkv7_cuda` adapts any call to that: it pads T at the
END with k = v = a = b = 0 and log_w = 0 (decay 1), which leaves the state unchanged and cannot
affect earlier outputs, so slicing y gives the exact result and the returned state is the
state after the real last token. The padding/layout code path takes the kernel as an argument
(`ops`), so CPU tests run it with a stand-in.

The backward pass inverts decays (see the .cu header): only for log_w >= -e^-0.5 (RWKV-7's
bound); the model always satisfies it.
"""
from __future__ import annotations

import functools
import hashlib
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UserError
from . import SEQ_MULTIPLE

HEAD_SIZE = 64
CHUNK_LEN = SEQ_MULTIPLE  # time steps per chunk: CHUNK in wkv7.cu must equal it
SOURCE = Path(__file__).with_name("cuda") / "wkv7.cu"
CFLAGS = ["-O3"]
CUDA_FLAGS = ["-O3", "--use_fast_math", "-Xptxas", "-O3", "--extra-device-vectorization"]

class CudaKernelUnavailable(UserError):
    """The extension cannot be built or run here (no GPU, no nvcc, compile error)."""


def build_dir() -> Path:
    """~/.cache/rwkvft/wkv7-<hash of source, flags, torch and CUDA versions>."""
    h = hashlib.sha256(SOURCE.read_bytes())
    for part in (torch.__version__, str(torch.version.cuda), " ".join(CFLAGS + CUDA_FLAGS)):
        h.update(part.encode())
    return Path.home() / ".cache" / "rwkvft" / f"wkv7-{h.hexdigest()[:16]}"


def _why_not() -> str:
    """Cheap reasons the kernel cannot be built, before trying ('' if none)."""
    from torch.utils.cpp_extension import CUDA_HOME
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible" if torch.version.cuda else "this torch build has no CUDA"
    if CUDA_HOME is None and shutil.which("nvcc") is None:
        return "nvcc (the CUDA compiler) was not found; install the CUDA toolkit or set up CUDA_HOME"
    if not SOURCE.is_file():
        return f"the kernel source {SOURCE} is missing from this install"
    return ""


def load_ops():
    """torch.ops.rwkvft_wkv7 (forward, backward), building the extension once per process.

    Raises CudaKernelUnavailable with one line saying why when it cannot be had.
    """
    ops, reason = _build()
    if ops is None:
        raise CudaKernelUnavailable(f"--op cuda is unavailable: {reason}")
    return ops


@functools.cache  # one build attempt per process; the disk cache spans processes
def _build():
    reason = _why_not()
    if reason:
        return None, reason
    from torch.utils.cpp_extension import load
    where = build_dir()
    where.mkdir(parents=True, exist_ok=True)
    try:
        load(name="rwkvft_wkv7", sources=[str(SOURCE)], build_directory=str(where),
             extra_cflags=CFLAGS, extra_cuda_cflags=CUDA_FLAGS, is_python_module=False,
             verbose=False)
        return torch.ops.rwkvft_wkv7, ""
    except Exception as e:  # noqa: BLE001 - any build failure becomes a one-line reason
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        return None, f"building the kernel in {where} failed ({first[:200]}); rerun with --debug for the log"


def available() -> tuple[bool, str]:
    """(True, '') when the kernel builds and loads here, else (False, one-line reason)."""
    try:
        load_ops()
        return True, ""
    except CudaKernelUnavailable as e:
        return False, str(e).removeprefix("--op cuda is unavailable: ")


class WKV7Function(torch.autograd.Function):
    """y, final_state = kernel(r, log_w, k, v, a, b, s0) on already padded, contiguous inputs."""

    @staticmethod
    def forward(ctx, ops, r, log_w, k, v, a, b, s0):
        y, sT, sa, ckpt = ops.forward(r, log_w, k, v, a, b, s0)
        ctx.ops = ops
        ctx.save_for_backward(r, log_w, k, v, a, b, s0, sa, ckpt)
        return y, sT

    @staticmethod
    def backward(ctx, dy, dsT):
        r, log_w, k, v, a, b, s0, sa, ckpt = ctx.saved_tensors
        # autograd passes None for an output nobody used (e.g. the final state)
        dy = torch.zeros_like(r) if dy is None else dy.to(r.dtype).contiguous()
        dsT = torch.zeros_like(s0) if dsT is None else dsT.float().contiguous()
        dr, dlw, dk, dv, da, db, ds0 = ctx.ops.backward(r, log_w, k, v, a, b, s0, sa, ckpt, dy, dsT)
        return None, dr, dlw, dk, dv, da, db, ds0


def _pad_time(x: torch.Tensor, pad: int) -> torch.Tensor:
    return F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x


def wkv7_cuda(r, log_w, k, v, a, b, state=None, ops=None):
    """RWKV-7 WKV (contract of kernels.wkv7) with the CUDA kernel; `ops` replaces the kernel
    (tests pass a CPU stand-in with the same forward/backward signature)."""
    B, T, H, N = r.shape
    if ops is None:
        if not r.is_cuda:
            raise UserError("--op cuda needs CUDA tensors on an NVIDIA GPU; use --op chunked on CPU")
        ops = load_ops()
    if N != HEAD_SIZE:
        raise UserError(f"--op cuda is built for head size {HEAD_SIZE}, this model has {N}; "
                        f"use --op fla or --op chunked")
    if T == 0:
        s = torch.zeros(B, H, N, N, device=r.device) if state is None else state.float()
        return r.new_zeros(B, 0, H, N), s
    # bf16 runs in bf16; everything else (fp32, fp16) in fp32, exactly representable
    io = torch.bfloat16 if r.dtype == torch.bfloat16 else torch.float32
    pad = (-T) % CHUNK_LEN
    xs = [_pad_time(x.to(io), pad).contiguous() for x in (r, k, v, a, b)]
    lw = _pad_time(log_w.float(), pad).contiguous()     # 0 in the padding: decay 1
    if state is None:
        s0 = torch.zeros(B, H, N, N, device=r.device, dtype=torch.float32)
    else:
        s0 = state.float().contiguous()
    y, sT = WKV7Function.apply(ops, xs[0], lw, *xs[1:], s0)
    return y[:, :T].to(r.dtype), sT
