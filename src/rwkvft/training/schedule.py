"""Learning-rate schedules, as pure functions of the optimizer step.

Notation: t = optimizer step counted from the start of training (epoch_begin included),
T = total optimizer steps = epoch_count x ceil(epoch_steps / accumulate_grad_batches)
(plus the epoch_begin epochs already done), W = warmup_steps.

cos_decay (default):
    t <  W:  lr = lr_init * (t + 1) / W
    t >= W:  p = min(1, (t - W) / max(1, T - W))
             lr = lr_final + (lr_init - lr_final) * (1 + cos(pi * p)) / 2
wsd (warmup-stable-decay):
    t <  W:            lr = lr_init * (t + 1) / W
    W <= t < D:        lr = lr_init                      with D = T - ceil(wsd_decay_frac * T)
    t >= D:            p = min(1, (t - D) / max(1, T - D))
                       lr = lr_init + (lr_final - lr_init) * p     (linear decay)
lr_final = -1 means "same as lr_init" for cos_decay (a constant LR, the tutorial's setting)
and 0 for wsd (RWKV-PEFT's wsd also ends at 0).
"""
from __future__ import annotations

import math


def final_lr(lr_init: float, lr_final: float, schedule: str) -> float:
    if lr_final >= 0:
        return lr_final
    return 0.0 if schedule == "wsd" else lr_init


def lr_at(t: int, total: int, lr_init: float, lr_final: float, warmup: int,
          schedule: str = "cos_decay", wsd_decay_frac: float = 0.1) -> float:
    lr_end = final_lr(lr_init, lr_final, schedule)
    warmup = max(0, warmup)
    if t < warmup:
        return lr_init * (t + 1) / warmup
    if schedule == "cos_decay":
        p = min(1.0, (t - warmup) / max(1, total - warmup))
        return lr_end + (lr_init - lr_end) * (1 + math.cos(math.pi * p)) / 2
    if schedule == "wsd":
        decay_start = total - math.ceil(wsd_decay_frac * total)
        if t < decay_start:
            return lr_init
        p = min(1.0, (t - decay_start) / max(1, total - decay_start))
        return lr_init + (lr_end - lr_init) * p
    raise ValueError(f"unknown schedule {schedule!r}")
