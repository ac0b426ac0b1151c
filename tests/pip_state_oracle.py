"""Logits of the `rwkv` pip package started from a state file loaded the way RWKV Runner loads it.

RWKV Runner (`backend-python/utils/rwkv.py` load_rwkv_state, spec runtime_formats.md) reads a
.pth of n_layer `blocks.{i}.att.time_state` (H, N, N), uses RWKV-7 states as stored and
transposes (1, 2) RWKV-5/6 states, then hands them to the pip model as the WKV entries
(index 3*i+1) of its flat per-layer state list [att_x_prev (C,), wkv (H,N,N), ffn_x_prev (C,)];
the token-shift entries stay zero. Run in a child process: the pip module binds its RWKV-7 or
v4-v6 class at import time from RWKV_V7_ON.

    python pip_state_oracle.py JOBS.json OUT.pt
JOBS.json: [{"model": "m.pth", "version": "x070"|"x060"|"x052", "tokens": [...],
             "state": "s.pth" or null}, ...]   (all jobs of one run share the version family)
OUT.pt: [(T, V) logits of one full_output pass, ...]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys


def run_jobs(jobs: list[dict], tmp_dir, v7: bool) -> list:
    import torch
    jobs_path, out_path = os.path.join(tmp_dir, "jobs.json"), os.path.join(tmp_dir, "out.pt")
    with open(jobs_path, "w") as f:
        json.dump([{k: (str(v) if k in ("model", "state") and v else v) for k, v in j.items()}
                   for j in jobs], f)
    env = {k: v for k, v in os.environ.items() if k != "RWKV_V7_ON"}
    env.update(RWKV_JIT_ON="0", RWKV_CUDA_ON="0")
    if v7:
        env["RWKV_V7_ON"] = "1"
    done = subprocess.run([sys.executable, __file__, jobs_path, out_path], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out_path, weights_only=True)


def runner_state(path: str, version: str, n_embd: int) -> list:
    """The pip state list Runner builds from a state .pth (zero token shifts)."""
    import torch
    sd = torch.load(path, map_location="cpu", weights_only=True)
    n_layer = len(sd)
    state = []
    for i in range(n_layer):
        s = sd[f"blocks.{i}.att.time_state"].float()
        if version != "x070":          # Runner: RWKV-5/6 states are transposed at load
            s = s.transpose(1, 2)
        state += [torch.zeros(n_embd), s.contiguous(), torch.zeros(n_embd)]
    return state


def _main(jobs_path: str, out_path: str) -> None:
    import torch
    from rwkv.model import RWKV
    results = []
    for job in json.load(open(jobs_path)):
        path = job["model"]
        model = RWKV(model=path[:-len(".pth")], strategy="cpu fp32", **(
            {} if job["version"] == "x070" else {"verbose": False}))
        n_embd = model.args.n_embd
        state = runner_state(job["state"], job["version"], n_embd) if job.get("state") else None
        logits, _ = model.forward(job["tokens"], state, full_output=True)
        results.append(logits.float().clone())
    torch.save(results, out_path)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
