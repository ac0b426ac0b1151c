"""Logits from the `rwkv` pip package's v4-v6 class, run in a child process.

The pip module picks its model class when it is imported: with RWKV_V7_ON=1 (which
conftest.py sets for the RWKV-7 oracle) the name `RWKV` is rebound to `RWKV_x070` and the
v4-v6 class is no longer reachable, so the RWKV-6/5 oracle needs a fresh interpreter.

    python pip_rwkv6_oracle.py JOBS.json OUT.pt
JOBS.json: [{"model": "path/to/file.pth", "tokens": [ids...]}, ...]
OUT.pt: [{"seq": (T,V) logits of one full_output pass, "steps": (T,V) one token at a time,
          "wkv": (L,H,N,N) WKV state after the steps, pip's [key, value] layout}, ...]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys


def run_jobs(jobs: list[dict], tmp_dir) -> list[dict]:
    """Run the oracle in a child process (v4-v6 class, 'cpu fp32') and return its results."""
    import torch
    jobs_path, out_path = os.path.join(tmp_dir, "jobs.json"), os.path.join(tmp_dir, "out.pt")
    with open(jobs_path, "w") as f:
        json.dump([{"model": str(j["model"]), "tokens": list(j["tokens"])} for j in jobs], f)
    env = {k: v for k, v in os.environ.items() if k != "RWKV_V7_ON"}
    env.update(RWKV_JIT_ON="0", RWKV_CUDA_ON="0")
    done = subprocess.run([sys.executable, __file__, jobs_path, out_path], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out_path, weights_only=True)


def _main(jobs_path: str, out_path: str) -> None:
    import torch
    from rwkv.model import RWKV
    assert RWKV.__name__ == "RWKV", "the v4-v6 class is only there without RWKV_V7_ON=1"
    results = []
    for job in json.load(open(jobs_path)):
        path = job["model"]
        model = RWKV(model=path[:-len(".pth")], strategy="cpu fp32", verbose=False)
        seq, _ = model.forward(job["tokens"], None, full_output=True)
        state, steps = None, []
        for t in job["tokens"]:
            out, state = model.forward([t], state)
            steps.append(out)
        # pip's WKV state is [key, value] per head; index i*3+1 of its flat per-layer list
        wkv = torch.stack([state[i * 3 + 1] for i in range(len(state) // 3)])
        results.append({"seq": seq.float().clone(), "steps": torch.stack(steps).float().clone(),
                        "wkv": wkv.float().clone()})
    torch.save(results, out_path)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
