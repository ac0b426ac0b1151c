"""Which learning rate suits --peft state? A small experiment on CPU (docs/benchmarks.md).

1. "Pretrain" a tiny RWKV (L2 C128 V256, full fine-tune) on task A: sequences from a fixed
   sparse Markov chain, so the model has something to lose.
2. For each LR, state-tune a copy on task B (sequences of a second Markov chain) with AdamW,
   constant LR, and report the task-B loss (what we train) and the task-A loss with the
   trained state (what the model should keep), against the base model. Both are measured on
   the first HEAD tokens of held-out sequences, where an initial state acts (it decays away).

    python benchmarks/bench_state_lr.py [--version x070] [--steps 120] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import math
import time

import torch

from rwkvft.adapters import inject, parse_peft
from rwkvft.models import model_from_state_dict
from rwkvft.models.init import new_config, random_state_dict
from rwkvft.training.loss import masked_lm_loss

V, T, B = 256, 64, 8
HEAD = 16  # tokens scored at evaluation
LRS = (1.0, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 3e-4)


def markov_batch(gen, trans, n=B):
    x = torch.empty(n, T + 1, dtype=torch.long)
    x[:, 0] = torch.randint(1, V, (n,), generator=gen)
    for t in range(T):
        nxt = trans[x[:, t]]                                   # (n, 4) likely successors
        x[:, t + 1] = nxt[torch.arange(n), torch.randint(0, 4, (n,), generator=gen)]
    return x


def loss_of(model, x, n=T):
    h, _ = model.forward_features(x[:, :n])
    s, c = masked_lm_loss(model.head, h, x[:, 1:n + 1], torch.ones(x.shape[0], n), chunk=4096)
    return s / c


def train(model, params, batches, lr, steps):
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    for _ in range(steps):
        loss = loss_of(model, batches())
        if not torch.isfinite(loss):
            return float("nan")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return float(loss.detach())


def evaluate(model, fixed_a, fixed_b):
    with torch.no_grad():
        return float(loss_of(model, fixed_a, HEAD)), float(loss_of(model, fixed_b, HEAD))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", default="x070")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--pretrain_steps", type=int, default=400)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    trans = torch.randint(1, V, (V, 4), generator=gen)
    trans_b = torch.randint(1, V, (V, 4), generator=gen)
    fixed_a = markov_batch(torch.Generator().manual_seed(1), trans, 64)
    fixed_b = markov_batch(torch.Generator().manual_seed(2), trans_b, 64)

    cfg = new_config(2, 128, V, version=args.version)
    base = model_from_state_dict(random_state_dict(cfg, seed=0)).train()
    t0 = time.time()
    train(base, list(base.parameters()), lambda: markov_batch(gen, trans), 3e-3, args.pretrain_steps)
    a0, b0 = evaluate(base, fixed_a, fixed_b)
    print(f"{args.version}: pretrained on A for {args.pretrain_steps} steps in {time.time() - t0:.0f} s: "
          f"first-{HEAD}-token loss A {a0:.3f}, B {b0:.3f} (uniform {math.log(V):.3f}, "
          f"a known chain {math.log(4):.3f})")
    with torch.no_grad():  # the scale states reach naturally: after a T-token sequence of A / B
        nat = [max(float(s[1].abs().max()) for s in base.forward_features(x[:, :T])[1])
               for x in (fixed_a, fixed_b)]
    print(f"natural state max |entry| after {T} tokens: A {nat[0]:.2f}, B {nat[1]:.2f}")
    print(f"state tuning on B, {args.steps} steps, AdamW, B={B} T={T}, clip 1.0")
    print(f"| lr | loss B, first {HEAD} tokens (base {b0:.3f}) | loss A with state (base {a0:.3f}) "
          f"| max abs state |")
    print("|---|---|---|---|")
    for lr in LRS:
        model = copy.deepcopy(base)
        names = inject(model, parse_peft("state", {}), [])
        params = [model.get_parameter(n) for n in names]
        g = torch.Generator().manual_seed(3)
        train(model, params, lambda: markov_batch(g, trans_b), lr, args.steps)
        a, b = evaluate(model, fixed_a, fixed_b)
        peak = max(float(p.detach().abs().max()) for p in params)
        print(f"| {lr:g} | {b:.3f} | {a:.3f} | {peak:.2f} |", flush=True)


if __name__ == "__main__":
    main()
