"""Fixtures for the kernel tests: wkv7.cu's kernel bodies built for CPU threads (cuda_on_cpu)."""
from __future__ import annotations

import pytest

from cuda_on_cpu import KernelOnCpu, build, cxx20_compiler, kernel_source


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
