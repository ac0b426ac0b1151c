"""Compile-only check of wkv7.cu with nvcc (`-m nvcc`; skipped where no nvcc is found): the
flags torch.utils.cpp_extension.load() would use for rwkvft's JIT build, for the H100 (sm_90).
No error and no warning, and ptxas' register spills no worse than today's: the forward kernels
spill nothing, the backward kernel (255 registers, like the official kernel's) at most 16 B
(fp32) / 48 B (bf16). A spill regression costs the GPU time that only a GPU could measure.

nvcc comes from the CUDA toolkit on PATH or the pinned wheels of the `nvcc` extra
(shared/specs/gpu_on_cpu.md §6.3). The CPU torch wheel lacks one generated header,
c10/cuda/impl/cuda_cmake_macros.h; a one-line stub stands in for it (the CUDA wheel has it).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch.utils.cpp_extension as cpp_ext

from rwkvft.kernels.cuda import CUDA_FLAGS, SOURCE

pytestmark = pytest.mark.nvcc
ARCH = ["-gencode=arch=compute_90,code=sm_90"]   # the device machine's H100
MAX_SPILL = {("forward", "float"): 0, ("forward", "bf16"): 0,
             ("backward", "float"): 16, ("backward", "bf16"): 48}


def find_nvcc() -> str | None:
    """nvcc on PATH, else the one the `nvcc` extra's wheels put in site-packages."""
    found = shutil.which("nvcc")
    if found:
        return found
    for site in sys.path:
        for hit in sorted(Path(site).glob("nvidia/*/bin/nvcc")) if site and Path(site).is_dir() else []:
            return str(hit)
    return None


def nvcc_command(nvcc: str, out: Path, stub: Path) -> list[str]:
    """cpp_extension's compile line for a CUDA source (its COMMON_NVCC_FLAGS, include paths,
    -fPIC, the C++ standard torch 2.13 builds with, our CUDA_FLAGS) plus -res-usage."""
    includes = [*cpp_ext.include_paths("cpu"), sysconfig.get_path("include", scheme="posix_prefix")]
    if not (Path(includes[0]) / "c10/cuda/impl/cuda_cmake_macros.h").is_file():
        header = stub / "c10/cuda/impl/cuda_cmake_macros.h"
        header.parent.mkdir(parents=True, exist_ok=True)
        header.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        includes.insert(0, str(stub))
    return [nvcc, "-c", str(SOURCE), "-o", str(out),
            "-DTORCH_EXTENSION_NAME=rwkvft_wkv7", "-DTORCH_API_INCLUDE_EXTENSION_H",
            *[f"-I{p}" for p in includes], *cpp_ext.COMMON_NVCC_FLAGS, *ARCH,
            "--compiler-options", "-fPIC", *CUDA_FLAGS, "-std=c++20", "-res-usage"]


def spills(ptxas_output: str) -> dict[tuple[str, str], int]:
    """(kernel, io type) -> bytes spilled (the larger of spill stores and spill loads), from
    ptxas' -res-usage report."""
    out, current = {}, None
    for line in ptxas_output.splitlines():
        entry = re.search(r"Function properties for (\S+)", line)
        if entry:
            name = entry.group(1)
            kind = re.search(r"wkv7_(forward|backward)_kernel", name)
            io = "bf16" if "__nv_bfloat16" in name else "float"
            current = (kind.group(1), io) if kind else None
            continue
        spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if spill and current:
            out[current] = max(int(spill.group(1)), int(spill.group(2)))
            current = None
    return out


def test_ptxas_report_parser():
    report = ("ptxas info    : Function properties for _ZN12_GLOBAL__N_120wkv7_backward_kernelI13__nv_bfloat16EEviiPKT_\n"
              "    48 bytes stack frame, 48 bytes spill stores, 40 bytes spill loads\n"
              "ptxas info    : Function properties for _ZN12_GLOBAL__N_119wkv7_forward_kernelIfEEviiPKT_\n"
              "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n")
    assert spills(report) == {("backward", "bf16"): 48, ("forward", "float"): 0}


def test_wkv7_cu_compiles_cleanly_without_more_spills(tmp_path):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (CUDA toolkit, or pip install -e '.[nvcc]')")
    cmd = nvcc_command(nvcc, tmp_path / "wkv7.o", tmp_path / "stub")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    log = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)}\n{log[-6000:]}"
    assert not re.search(r"warning|error", log, re.IGNORECASE), log[-6000:]
    found = spills(log)
    print({k: f"{v} B" for k, v in found.items()})
    assert set(found) == set(MAX_SPILL), found
    for key, limit in MAX_SPILL.items():
        assert found[key] <= limit, (key, found[key], "bytes spilled, allowed", limit)
