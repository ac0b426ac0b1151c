"""Run in a subprocess by test_fla_interp.py with TRITON_INTERPRET=1 in its environment (the
interpreter is chosen when triton is imported, so it cannot be switched on inside pytest):
rwkvft's `wkv7`/`wkv6` with op="fla", forward and backward with an initial state and a
final-state gradient, against the float64 reference. Prints one JSON object: case -> errors."""
from __future__ import annotations

import json
import os
import sys
import time

import triton_interp_shim

triton_interp_shim.install()
import fla.ops.rwkv6  # noqa: E402,F401  (after the shim; patch_fla patches what they loaded)
import fla.ops.rwkv7  # noqa: E402,F401

triton_interp_shim.patch_fla()

import rwkvft.kernels.fla as rwkvft_fla  # noqa: E402
from rwkvft.kernels import wkv6, wkv7  # noqa: E402
from rwkvft.kernels.reference import wkv6_reference, wkv7_reference  # noqa: E402
from wkv_cases import compare, wkv6_case, wkv7_case  # noqa: E402

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
rwkvft_fla._check = lambda r: None   # the op's only CPU refusal ("needs CUDA tensors")

CASES = {
    "wkv7 T=16": lambda: compare(lambda *a: wkv7(*a, op="fla"), wkv7_reference, wkv7_case(16, B=1, H=1)),
    "wkv7 T=37": lambda: compare(lambda *a: wkv7(*a, op="fla"), wkv7_reference, wkv7_case(37, B=1, H=1)),
    "wkv6 T=45": lambda: compare(lambda *a: wkv6(*a, op="fla"), wkv6_reference, wkv6_case(45, B=1, H=1)),
}

results = {}
for name in sys.argv[1:] or CASES:
    start = time.perf_counter()
    results[name] = CASES[name]()
    results[name]["seconds"] = time.perf_counter() - start
print(json.dumps(results))
