"""DPO step cost against SFT, and the synthetic preference curve (docs/benchmarks.md).

    python benchmarks/bench_preference.py cost  [--n_layer 4 --n_embd 256 --pairs 4 --prompt 96 --answer 64]
    python benchmarks/bench_preference.py curve [--steps 12]

cost: each mode runs in a fresh process (peak memory is per process) on a random model with a
MiSS adapter, World vocabulary, fp32 on CPU (bf16 autocast on a GPU):
  sft2B   an SFT step on 2B rows of prompt+answer (the full-sequence layout of B pairs)
  dpoB    a DPO step on B pairs: shared-prompt policy forward + reference forward + backward
  promptB an SFT step on the B prompts alone ("one prompt pass")
and prints the step time (median of --steps after one warm-up) and the peak memory the step adds
over the loaded model (CPU: ru_maxrss growth; GPU: max_memory_allocated growth).
curve: DPO with MiSS on training/synthetic_pairs.py, held-out accuracy after every step.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def _setup(a):
    from rwkvft.adapters import inject, parse_peft, registry
    from rwkvft.models.build import model_from_state_dict
    from rwkvft.models.init import new_config, random_state_dict
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sd = {k: v.float() for k, v in random_state_dict(new_config(a.n_layer, a.n_embd, 65536), seed=0).items()}
    model = model_from_state_dict(sd, dtype=torch.float32).to(device).train()
    if device.type == "cuda":
        model.set_runtime(op="cuda")
    acfg = parse_peft("miss", {"r": 32})
    inject(model, acfg, [])
    return model, registry.get("miss").reference(model, acfg), device


def _pairs(a):
    from rwkvft.data.preference import Pair
    g = torch.Generator().manual_seed(0)

    def rnd(n):
        return tuple(torch.randint(1, 65536, (n,), generator=g).tolist())
    return [Pair(rnd(a.prompt), rnd(a.answer), rnd(a.answer)) for _ in range(a.pairs)]


def _peak(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB -> MiB


def run_mode(a) -> dict:
    from rwkvft.data.preference import collate_pairs
    from rwkvft.training.infctx import batch_loss
    from rwkvft.training.preference import Objective
    from rwkvft.training.preference_step import PreferenceStep, _to
    model, ref, device = _setup(a)
    batch = _to(collate_pairs(_pairs(a)), device)
    step = PreferenceStep(Objective("dpo"), ref)
    prompts = torch.stack(batch["prompts"])

    def once():
        if a.mode == "dpoB":
            loss, _ = step(model, batch)
        elif a.mode == "sft2B":
            loss = batch_loss(model, batch["input_ids"], batch["targets"], batch["mask"])
        else:
            loss = batch_loss(model, prompts[:, :-1], prompts[:, 1:], torch.ones_like(prompts[:, 1:]).float())
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = _peak(device)
    times = []
    for _ in range(a.steps + 1):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            once()
        times.append(time.perf_counter() - t0)
    return {"mode": a.mode, "device": str(device), "step_s": round(statistics.median(times[1:]), 3),
            "peak_add_mib": round(_peak(device) - before, 1), "pairs": a.pairs,
            "prompt": a.prompt, "answer": a.answer, "n_layer": a.n_layer, "n_embd": a.n_embd}


def cost(a) -> None:
    rows = []
    for mode in ("sft2B", "dpoB", "promptB"):
        argv = [sys.executable, __file__, "one", "--mode", mode] + \
               [f"--{k}={v}" for k, v in vars(a).items() if k not in ("cmd", "mode")]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    sft, dpo, prompt = rows
    print(f"DPO step at B={a.pairs}: {dpo['step_s']}s vs SFT at 2B: {sft['step_s']}s "
          f"(x{dpo['step_s'] / sft['step_s']:.2f}); peak memory added {dpo['peak_add_mib']} MiB vs "
          f"SFT 2B + prompt pass {sft['peak_add_mib']} + {prompt['peak_add_mib']} MiB")


def curve(a) -> None:
    from rwkvft.adapters import inject, parse_peft, registry
    from rwkvft.data.preference import collate_pairs
    from rwkvft.models.build import model_from_state_dict
    from rwkvft.models.init import new_config, random_state_dict
    from rwkvft.training.preference import Objective
    from rwkvft.training.preference_step import PreferenceStep, score_pairs
    from rwkvft.training.synthetic_pairs import synthetic_pairs
    torch.manual_seed(0)
    sd = {k: v.float() for k, v in random_state_dict(new_config(2, 64, 64), seed=2).items()}
    model = model_from_state_dict(sd, dtype=torch.float32).train()
    acfg = parse_peft("miss", {"r": 8})
    inject(model, acfg, [])
    step = PreferenceStep(Objective("dpo", beta=0.5), registry.get("miss").reference(model, acfg))
    train, held = synthetic_pairs(64, seed=1), synthetic_pairs(32, seed=2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    rank = PreferenceStep(Objective("simpo", beta=1.0, simpo_gamma=0.0))  # log-prob ranking, no reference
    print(json.dumps({"step": 0, "held_out_accuracy": score_pairs(model, step, held, 16, "cpu")["rewards/accuracies"],
                      "base_ranking_accuracy": score_pairs(model, rank, held, 16, "cpu")["rewards/accuracies"]}))
    for s in range(a.steps):
        t0 = time.perf_counter()
        loss, _ = step(model, collate_pairs([train[(s * 8 + i) % 64] for i in range(8)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        acc = score_pairs(model, step, held, 16, "cpu")["rewards/accuracies"]
        print(json.dumps({"step": s + 1, "loss": round(float(loss.detach()), 4), "held_out_accuracy": acc,
                          "step_s": round(dt, 3)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=("cost", "curve", "one"))
    p.add_argument("--mode", default="dpoB")
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=256)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--prompt", type=int, default=96)
    p.add_argument("--answer", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    a = p.parse_args()
    if a.cmd == "one":
        print(json.dumps(run_mode(a)))
    else:
        (cost if a.cmd == "cost" else curve)(a)


if __name__ == "__main__":
    main()
