"""What a training run shows on the console (global rank 0 only).

On a terminal: Lightning's progress bar, with the whole run's ETA beside the epoch's.
Without one (nohup, a job scheduler, stdout piped to a file) a bar would write one endless line
of carriage returns into the log, so there is none; instead a plain line at the first step, at
least every PLAIN_EVERY_S seconds and at each epoch's end: step, loss, tokens/s, elapsed time
and the ETA of the epoch and of the run. The summaries (data, skipped records, epoch lines,
saves) reach both through `RunLog.say`.
"""
from __future__ import annotations

import math
import os
import sys
import time

import lightning as L

PLAIN_EVERY_S = 30.0   # a line every 30 s keeps a day-long run's log under ~3,000 lines


def fmt_duration(seconds: float | None) -> str:
    """1:02:03 / 2:03 / 1d 02:03:04; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    text = f"{h}:{m:02d}:{s:02d}" if h or d else f"{m}:{s:02d}"
    return f"{d}d {h:02d}:{m:02d}:{s:02d}" if d else text


def run_steps(cfg, per_epoch: int, budget: int | None) -> int:
    """Optimizer steps (Lightning's global_step) at which this run ends: the epochs, cut by
    --max_steps / --max_tokens (budget) and --my_exit."""
    ends = [per_epoch * cfg.epoch_count]
    if budget is not None:
        ends.append(budget)
    if cfg.my_exit:
        ends.append(per_epoch * cfg.my_exit)
    return max(0, min(ends))


class RunClock:
    """Elapsed time and the ETAs of the epoch and of the run, from the steps done in this
    process (a resumed run starts counting at the step it resumed from)."""

    def __init__(self, total: int, per_epoch: int, clock=time.monotonic):
        self.total, self.per_epoch, self.clock = total, max(1, per_epoch), clock
        self.t0 = self.t_epoch = None
        self.step0 = self.epoch_step0 = self.step = 0

    def start(self, global_step: int) -> None:
        self.t0 = self.clock()
        self.step0 = self.step = global_step
        self.start_epoch(global_step)

    def start_epoch(self, global_step: int) -> None:
        self.t_epoch = self.clock()
        self.epoch_step0 = global_step

    def advance(self, global_step: int) -> None:
        self.step = global_step

    def elapsed(self) -> float:
        return 0.0 if self.t0 is None else self.clock() - self.t0

    def epoch_end(self) -> int:
        """global_step at which the current epoch ends (or the run, if sooner)."""
        end = (self.epoch_step0 // self.per_epoch + 1) * self.per_epoch
        return min(end, self.total)

    def run_eta(self) -> float | None:
        return _eta(self.t0, self.clock(), self.step - self.step0, self.total - self.step)

    def epoch_eta(self) -> float | None:
        return _eta(self.t_epoch, self.clock(), self.step - self.epoch_step0, self.epoch_end() - self.step)


def _eta(t_start, now, done: int, left: int) -> float | None:
    if left <= 0:
        return 0.0
    if t_start is None or done <= 0:
        return None
    return (now - t_start) / done * left


class ClockCallback(L.Callback):
    """Keeps a RunClock in step with the trainer (placed before the bar and the plain lines)."""

    def __init__(self, clock: RunClock):
        self.clock = clock

    def on_train_start(self, trainer, pl_module):
        self.clock.start(trainer.global_step)

    def on_train_epoch_start(self, trainer, pl_module):
        if self.clock.t0 is not None and trainer.global_step != self.clock.step0:
            self.clock.start_epoch(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock.advance(trainer.global_step)


class PlainProgress(L.Callback):
    """Without a terminal: one plain line per PLAIN_EVERY_S seconds, the first step and each
    epoch's last step (rank 0). Reads the step's row from StepMetrics (placed before it)."""

    def __init__(self, clock: RunClock, metrics, step_offset: int, every_s: float = PLAIN_EVERY_S,
                 out=None):
        self.clock, self.metrics, self.offset, self.every_s = clock, metrics, step_offset, every_s
        self.out = out
        self._printed_at = None
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        gs = trainer.global_step
        if gs == self._last_step or not trainer.is_global_zero:
            return  # gradient accumulation: no optimizer step on this micro-batch
        self._last_step = gs
        now = self.clock.clock()
        due = self._printed_at is None or now - self._printed_at >= self.every_s
        if due or gs >= self.clock.epoch_end():
            self._printed_at = now
            print(self.line(trainer), file=self.out or sys.stdout, flush=True)

    def line(self, trainer) -> str:
        row, c = self.metrics.last_row or {}, self.clock
        epoch_no = row.get("epoch", trainer.current_epoch)
        in_epoch = c.step - trainer.current_epoch * c.per_epoch
        parts = [f"step {c.step + self.offset}/{c.total + self.offset}",
                 f"epoch {epoch_no} {in_epoch}/{c.per_epoch}"]
        if "loss" in row:
            parts.append(f"loss {row['loss']:.4f}")
        if "tokens_per_s" in row:
            parts.append(f"{row['tokens_per_s']:.0f} tokens/s")
        parts.append(f"elapsed {fmt_duration(c.elapsed())}")
        parts.append(f"ETA epoch {fmt_duration(c.epoch_eta())}, run {fmt_duration(c.run_eta())}")
        return " | ".join(parts)


def progress_bar(clock: RunClock):
    """Lightning's own bar (rich when installed, else tqdm) with the run's ETA beside the
    epoch's, and small numbers (the LR) in a readable form instead of 0.000."""
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    base = RichProgressBar if _RICH_AVAILABLE else TQDMProgressBar

    class RunEtaBar(base):
        def get_metrics(self, trainer, pl_module):
            items = super().get_metrics(trainer, pl_module)
            items.pop("v_num", None)
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in items.items()}
            shown["run ETA"] = fmt_duration(clock.run_eta())
            return shown

    return RunEtaBar()


class ZeroGradWatch(L.Callback):
    """Says so when every trainable tensor got exactly zero gradient in each of the first
    `steps` optimizer steps: such a run trains nothing (e.g. state tuning on a model whose
    att.output is all zeros, as the official init leaves it). Gradients that are not in
    `.grad` (DeepSpeed ZeRO keeps its own) cannot be judged and say nothing."""

    def __init__(self, runlog, steps: int = 3):
        self.runlog, self.steps = runlog, steps
        self.zero_steps = 0
        self.done = False

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.done:
            return
        grads = [p.grad for p in pl_module.parameters() if p.requires_grad and p.grad is not None]
        if not grads or any(bool(g.ne(0).any()) for g in grads):
            self.done = True   # something learns (or cannot be told): no more checks
            return
        self.zero_steps += 1
        if self.zero_steps >= self.steps:
            self.done = True
            self.runlog.say(f"rwkvft: warning: every trainable tensor got exactly zero gradient in "
                            f"each of the first {self.steps} steps, so this run learns nothing; a "
                            f"model with all-zero att.output / ffn.value weights (the official init, "
                            f"`rwkvft init --official`) cannot be state-tuned: start from a trained "
                            f"model or from `rwkvft init` without --official")


def console_callbacks(cfg, metrics, step_offset: int, per_epoch: int, budget: int | None,
                      terminal: bool | None = None) -> tuple[bool, list]:
    """(enable Lightning's progress bar?, callbacks to add after `metrics`) for a run.

    `--progress 0` turns both the bar and the plain lines off, not the zero-gradient notice."""
    watch = [ZeroGradWatch(metrics.runlog)]
    if not cfg.progress:
        return False, watch
    terminal = sys.stdout.isatty() if terminal is None else terminal
    clock = RunClock(run_steps(cfg, per_epoch, budget), per_epoch)
    if terminal:
        return True, [*watch, ClockCallback(clock), progress_bar(clock)]
    return False, [*watch, ClockCallback(clock), PlainProgress(clock, metrics, step_offset)]


def share_cpu_cores(devices: int, rank0: bool) -> None:
    """--devices N on CPU: the N processes split the cores between them. More processes than
    cores only adds overhead, which would otherwise pass silently: say so once (rank 0)."""
    import torch
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // devices))
    if devices > cores and rank0:
        print(f"rwkvft: warning: --devices {devices} starts {devices} training processes on "
              f"{cores} CPU cores; they share the cores and train slower than --devices {cores}",
              file=sys.stderr, flush=True)
