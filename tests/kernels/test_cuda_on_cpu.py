"""wkv7.cu itself on CPU: its kernel bodies, cut from the file at test time and compiled with g++
and a small shim (cuda_on_cpu/), run as 64 threads per block behind rwkvft's real
`wkv7_cuda(..., ops=...)` wrapper (padding, layout, autograd Function) and are compared with the
float64 sequential reference: y, the final state and the gradients of r, log_w, k, v, a, b and
the initial state. Planted bugs (an index off by one, a missing barrier, a wrong decay in the
gradient carry) must make the same comparison fail, so the check is known to have teeth.

Measured (max |err| / max |ref|, g++ 12.2; docs/gpu.md has the table): fp32 y/state <= 2.7e-7,
gradients <= 2.2e-5; with every channel at the strongest decay the step inversion in the
backward pass gives dr/da/dlog_w up to 5.2e-4 at T=128; bf16 (inputs, y and gradients rounded
to 8-bit mantissas) <= 3.4e-3. The limits below leave a margin of 3x or more over those.
"""
from __future__ import annotations

import pytest
import torch

from cuda_on_cpu import KernelOnCpu, build, kernel_source, mutated
from cuda_on_cpu import cxx, kernel_lib, kernel_ops  # noqa: F401 (fixtures)
from wkv_cases import compare, wkv7_case
from rwkvft.kernels.cuda import wkv7_cuda
from rwkvft.kernels.reference import wkv7_reference

LIMIT = {  # (dtype, strongest decay) -> (y and state, gradients)
    (torch.float32, False): (5e-6, 1e-4),
    (torch.float32, True): (5e-6, 1.5e-3),
    (torch.bfloat16, False): (1.5e-2, 1.5e-2),
    (torch.bfloat16, True): (1.5e-2, 1.5e-2),
}


def errors(ops, case) -> dict[str, float]:
    """max |kernel - reference| / max |reference| for y, the state and every gradient."""
    return compare(lambda *a: wkv7_cuda(*a, ops=ops), wkv7_reference, case)


def assert_within(errs, dtype, strongest):
    lim_out, lim_grad = LIMIT[(dtype, strongest)]
    for name, e in errs.items():
        assert e <= (lim_out if name in ("y", "state") else lim_grad), (name, e, errs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("T", [5, 16, 37, 128])
def test_real_kernel_matches_the_reference(kernel_ops, dtype, T):
    errs = errors(kernel_ops, wkv7_case(T, dtype))
    assert [c["T"] for c in kernel_ops.calls] == [T + (-T) % 16] * 2   # forward, backward
    assert_within(errs, dtype, strongest=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_real_kernel_at_the_strongest_decay(kernel_ops, dtype):
    """1/d = 1.84 per inverted step, 15 steps between exact reloads: the worst case of the
    backward pass's state reconstruction."""
    assert_within(errors(kernel_ops, wkv7_case(128, dtype, strongest=True)), dtype, strongest=True)


# Each planted bug is one textual change of the real source; `mutated` insists the text occurs
# exactly once, so an edit of wkv7.cu that removes the target fails here instead of testing nothing.
PLANTED = {
    "checkpoint index off by one": ("(int64_t)(t / CHUNK - 1) * N * N", "(int64_t)(t / CHUNK) * N * N"),
    "barrier after q_s removed": ("q_s[i] = qi;\n    __syncthreads();", "q_s[i] = qi;"),
    "row carry with the wrong decay": ("dsrow[j] * d_s[j]", "dsrow[j] * di"),
}


@pytest.mark.parametrize("bug", PLANTED)
def test_planted_bug_fails_the_comparison(cxx, tmp_path, bug):
    lib = build(cxx, mutated(kernel_source(), *PLANTED[bug]), tmp_path)
    errs = errors(KernelOnCpu(lib), wkv7_case(37, torch.float32))
    worst = max(errs.values())
    print(f"{bug}: worst error {worst:.3g}", {k: f"{v:.2g}" for k, v in errs.items()})
    assert worst > 10 * LIMIT[(torch.float32, False)][1], errs
