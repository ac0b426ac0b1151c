"""fla-core's Triton kernels on CPU under the Triton interpreter (`-m interp`; needs the `interp`
extra, skipped without it): rwkvft's wkv7/wkv6 with op="fla", forward and backward with an
initial state and a final-state gradient, against the float64 reference, fp32 only (the
interpreter's bf16 is not GPU bf16: shared/specs/gpu_on_cpu.md §1.3). The kernels run in a
subprocess (fla_interp_check.py) because TRITON_INTERPRET must be set before triton is imported.

numpy does fp32 tl.dot exactly, so the interpreter's error is ~1e-7..1e-6 (GPU fp32 uses TF32:
test_gpu.py's bounds are looser). The bound here leaves 10x over the worst measured (1.3e-6)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = ["wkv7 T=16", "wkv7 T=37", "wkv6 T=45"]   # T=37: fla's tail chunk
LIMIT = 1e-5
pytestmark = [pytest.mark.interp,
              pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("triton", "fla")),
                                 reason="triton / fla-core not installed (pip install -e '.[interp]')")]


@pytest.fixture(scope="module")
def interp_results():
    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("fla_interp_check.py")), *CASES],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_fla_under_the_triton_interpreter_matches_the_reference(interp_results, case):
    errs = dict(interp_results[case])
    print(case, f"{errs.pop('seconds'):.1f} s", {k: f"{v:.2g}" for k, v in errs.items()})
    assert set(errs) >= {"y", "state", "r", "log_w", "k", "v", "state0"}
    assert max(errs.values()) <= LIMIT, errs
