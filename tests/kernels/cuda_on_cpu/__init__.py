"""wkv7.cu's kernel bodies compiled with g++ and run on CPU threads, as an `ops` object for
rwkvft's own `wkv7_cuda(..., ops=...)` wrapper (shared/specs/gpu_on_cpu.md §2.3, §6.1).

The kernel templates are cut out of the real source at build time (from `constexpr int N` up to
`void check_inputs`), so there is no copy that can drift; `shim.h` supplies the CUDA keywords,
threadIdx/blockIdx, `__syncthreads` and bf16, and `launch.cpp` runs each (batch, head) block
as 64 threads. `KernelOnCpu` is the host half: the checks and allocations of `wkv7_forward` /
`wkv7_backward` in wkv7.cu, with every output pre-filled with NaN so an unwritten element shows.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from rwkvft.kernels.cuda import CHUNK_LEN, HEAD_SIZE, SOURCE

HERE = Path(__file__).parent
START, END = "constexpr int N", "void check_inputs"
CXXFLAGS = ["-std=c++20", "-O2", "-shared", "-fPIC", "-pthread"]


def kernel_source() -> str:
    """The lines of wkv7.cu from `constexpr int N` to just before `void check_inputs`."""
    lines = SOURCE.read_text().splitlines(keepends=True)
    starts = [n for n, ln in enumerate(lines) if ln.startswith(START)]
    ends = [n for n, ln in enumerate(lines) if ln.startswith(END)]
    assert len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0], \
        f"wkv7.cu no longer has one '{START}' line before one '{END}' line: update the extraction"
    return "".join(lines[starts[0]:ends[0]])


def mutated(source: str, old: str, new: str) -> str:
    """source with the single occurrence of `old` replaced (a planted bug)."""
    assert source.count(old) == 1, f"{old!r} occurs {source.count(old)} times in the kernel"
    return source.replace(old, new)


def cxx20_compiler() -> str | None:
    """A C++ compiler that builds <barrier> with -std=c++20, or None (the tests then skip)."""
    for cxx in ("g++", "c++", "clang++"):
        path = shutil.which(cxx)
        if path is None:
            continue
        probe = subprocess.run([path, "-std=c++20", "-fsyntax-only", "-x", "c++", "-"],
                               input="#include <barrier>\nstd::barrier<> b(1);\n",
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return path
    return None


def build(cxx: str, source: str, where: Path) -> ctypes.CDLL:
    """Compile `source` (kernel bodies) with the shim and launcher into where/wkv7_cpu.so."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "wkv7_kernels.inc").write_text(source)
    lib = where / "wkv7_cpu.so"
    cmd = [cxx, *CXXFLAGS, f"-I{where}", f"-I{HERE}", str(HERE / "launch.cpp"), "-o", str(lib)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr[-4000:]}"
    so = ctypes.CDLL(str(lib))
    for fn in (so.wkv7_forward, so.wkv7_backward):
        fn.argtypes = [ctypes.c_int] * 4 + [ctypes.POINTER(ctypes.c_void_p)]
        fn.restype = None
    assert so.wkv7_chunk() == CHUNK_LEN, "CHUNK in wkv7.cu must equal kernels.cuda.CHUNK_LEN"
    return so


def _check(ok: bool, what: str) -> None:
    if not ok:  # TORCH_CHECK's failure in the host code is a RuntimeError too
        raise RuntimeError(f"wkv7 cuda: {what}")


def _pointers(tensors) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def _nan_like(x: torch.Tensor, *shape, dtype=None) -> torch.Tensor:
    return torch.full(shape or x.shape, float("nan"), dtype=dtype or x.dtype)


class KernelOnCpu:
    """torch.ops.rwkvft_wkv7 with the compiled kernel bodies; `calls` records what came in."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        self.calls: list[dict] = []

    def _check_inputs(self, r, lw, k, v, a, b, s0):  # check_inputs() in wkv7.cu
        _check(r.dim() == 4 and r.shape[3] == HEAD_SIZE, "r must be (B,T,H,64)")
        _check(r.shape[1] % CHUNK_LEN == 0, "T must be a multiple of 16 (the wrapper pads)")
        _check(lw.dtype == torch.float32, "log_w must be fp32")
        _check(all(t.shape == r.shape and t.is_contiguous() for t in (r, lw, k, v, a, b)),
               "inputs must be contiguous, same shape")
        _check(all(t.dtype == r.dtype for t in (k, v, a, b)), "r,k,v,a,b must share a dtype")
        _check(r.dtype in (torch.float32, torch.bfloat16), "r,k,v,a,b must be bf16 or fp32")
        _check(s0.dtype == torch.float32 and s0.is_contiguous()
               and s0.shape == (r.shape[0], r.shape[2], HEAD_SIZE, HEAD_SIZE),
               "state must be contiguous fp32 (B,H,64,64)")
        self.calls.append({"T": r.shape[1], "dtypes": (r.dtype, lw.dtype, s0.dtype)})

    def forward(self, r, lw, k, v, a, b, s0):
        self._check_inputs(r, lw, k, v, a, b, s0)
        B, T, H, N = r.shape
        y, sT = _nan_like(r), _nan_like(s0)
        sa = _nan_like(r, B, T, H, N, dtype=torch.float32)
        ckpt = _nan_like(r, B, H, T // CHUNK_LEN, N, N, dtype=torch.float32)
        if T == 0 or B == 0 or H == 0:
            return [y, s0.clone(), sa, ckpt]
        self.lib.wkv7_forward(r.dtype == torch.bfloat16, B, T, H,
                              _pointers([r, lw, k, v, a, b, s0, y, sT, sa, ckpt]))
        return [y, sT, sa, ckpt]

    def backward(self, r, lw, k, v, a, b, s0, sa, ckpt, dy, dsT):
        self._check_inputs(r, lw, k, v, a, b, s0)
        _check(dy.shape == r.shape and dy.dtype == r.dtype and dy.is_contiguous(), "dy must match y")
        _check(dsT.shape == s0.shape and dsT.dtype == torch.float32 and dsT.is_contiguous(),
               "final-state gradient must be contiguous fp32 (B,H,64,64)")
        B, T, H, _ = r.shape
        grads = [_nan_like(t) for t in (r, lw, k, v, a, b, s0)]
        if T == 0 or B == 0 or H == 0:
            return grads[:6] + [dsT.clone()]
        self.lib.wkv7_backward(r.dtype == torch.bfloat16, B, T, H,
                               _pointers([r, lw, k, v, a, b, s0, sa, ckpt, dy, dsT, *grads]))
        return grads


# Fixtures (import them into a test module by name; a tests/kernels/conftest.py would shadow the
# top-level `conftest` module the other test modules import helpers from)
@pytest.fixture(scope="session")
def cxx():
    """A C++20 compiler (CI has g++ 12); the .cu-on-CPU tests skip without one."""
    path = cxx20_compiler()
    if path is None:
        pytest.skip("no C++20 compiler with <barrier> (g++ >= 11) to run wkv7.cu on CPU threads")
    return path


@pytest.fixture(scope="session")
def kernel_lib(cxx, tmp_path_factory):
    """The real wkv7.cu kernel bodies, compiled once per session."""
    return build(cxx, kernel_source(), tmp_path_factory.mktemp("wkv7_cpu"))


@pytest.fixture
def kernel_ops(kernel_lib):
    """A fresh `ops` object for wkv7_cuda(..., ops=...) running the real kernel on CPU."""
    return KernelOnCpu(kernel_lib)
