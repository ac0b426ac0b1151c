"""What happens between optimizer steps: validation, step saves, budgets and a clean stop.

After every optimizer step (not every micro-batch), `StepEvents`
- validates every --val_every steps (and at every epoch end, before the epoch's save);
- saves rwkv-step{S}.pth + last.ckpt every --save_every_steps steps, and prunes older step saves
  to the newest --keep_last (epoch saves, rwkv-best and the final save are never step saves
  that can be pruned: the final one is the newest);
- ends the run at --max_steps / --max_tokens, or at the first Ctrl-C / SIGTERM, after saving.
Step numbers S are those of loss.jsonl (they include the steps before --epoch_begin).

A run resumed from a mid-epoch save continues that epoch with the very next sample: the data is a
pure function of (seed, epoch, index), and `ResumableData` shifts the indices by the samples
the saved run had already drawn in that epoch.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import Dataset

STEP_SAVE = re.compile(r"^rwkv-step(\d+)\.(pth|safetensors)$")


class ResumableData(Dataset):
    """The training dataset with its indices shifted by `skip` (0 except in a resumed epoch)."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.skip = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[int(i) + self.skip]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


def silence_mid_epoch_resume_warning() -> None:
    """Lightning warns that a mid-epoch resume with a plain DataLoader is unreliable; ours is
    exact (ResumableData), so the warning would only mislead."""
    import warnings
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def steps_per_epoch(cfg) -> int:
    return math.ceil(cfg.epoch_steps / cfg.accumulate_grad_batches)


def budget_steps(cfg, world_size: int) -> int | None:
    """Optimizer steps this run may take by --max_steps / --max_tokens (None = no budget).

    Tokens are counted as the trainer counts them: samples x ctx_len (padding included), over all
    devices and accumulated micro-batches."""
    limits = []
    if cfg.max_steps > 0:
        limits.append(cfg.max_steps)
    if cfg.max_tokens > 0:
        per_step = cfg.micro_bsz * cfg.ctx_len * world_size * cfg.accumulate_grad_batches
        limits.append(math.ceil(cfg.max_tokens / per_step))
    return min(limits) if limits else None


def prune_step_saves(proj_dir: Path, keep: int, fmt: str) -> list[Path]:
    """Delete all but the newest `keep` rwkv-step*.{fmt} files; return what was deleted."""
    saves = sorted((int(m.group(1)), p) for p in Path(proj_dir).glob(f"rwkv-step*.{fmt}")
                   if (m := STEP_SAVE.match(p.name)))
    doomed = [p for _, p in saves[:max(0, len(saves) - keep)]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


class StepEvents(L.Callback):
    def __init__(self, cfg, runlog, saver, data: ResumableData, step_offset: int,
                 validator=None, stop=None, budget: int | None = None):
        self.cfg = cfg
        self.runlog = runlog
        self.saver = saver                  # SaveAdapter: its _save(trainer, label) is collective
        self.data = data
        self.step_offset = step_offset
        self.validator = validator
        self.stop = stop                    # interrupt.StopRequest or None
        self.budget = budget
        self.per_epoch = steps_per_epoch(cfg)
        self.stopped_by = ""                # "", "signal" or "budget"
        self._last_step = -1

    # ----- start / resume -----
    def on_train_start(self, trainer, pl_module):
        if self.stop is not None:
            self.stop.install()  # after Lightning's own SIGTERM handler, which it replaces
        self._last_step = trainer.global_step
        if self.budget is not None and trainer.global_step >= self.budget:
            # resumed at or past the budget: not one more step (its save already exists)
            self.stopped_by = "budget"
            self.runlog.say(f"nothing to train: the budget of {self.budget} optimizer steps "
                             f"(--max_steps/--max_tokens) was reached at step "
                             f"{trainer.global_step + self.step_offset}; raise it to train on")
            trainer.should_stop = True
            return
        done = trainer.global_step % self.per_epoch
        if done:  # resumed from a mid-epoch save: Lightning does not restart the epoch's hooks
            epoch = self.cfg.epoch_begin + trainer.current_epoch
            batches = done * self.cfg.accumulate_grad_batches
            self.data.set_epoch(epoch)
            self.data.skip = batches * self.cfg.micro_bsz * trainer.world_size
            self.runlog.say(f"resuming inside epoch {epoch} after step {trainer.global_step + self.step_offset}: "
                             f"its first {batches} batches were trained before")

    def on_train_epoch_start(self, trainer, pl_module):
        self.data.skip = 0

    def on_train_end(self, trainer, pl_module):
        if self.stop is not None:
            self.stop.restore()

    def on_exception(self, trainer, pl_module, exception):
        if self.stop is not None:
            self.stop.restore()

    # ----- after each optimizer step -----
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self._last_step:
            return  # gradient accumulation: no optimizer step on this micro-batch
        self._last_step = gs = trainer.global_step
        step, epoch = gs + self.step_offset, self.cfg.epoch_begin + trainer.current_epoch
        signal_stop = self._stop_requested(trainer, pl_module)
        budget_stop = self.budget is not None and gs >= self.budget
        ending = signal_stop or budget_stop
        epoch_end = gs % self.per_epoch == 0  # the epoch-end hooks validate and save
        if self.validator is not None and not epoch_end and (
                ending or (self.cfg.val_every and step % self.cfg.val_every == 0)):
            self.validator.run(trainer, pl_module, step, epoch)
        periodic = self.cfg.save_every_steps and step % self.cfg.save_every_steps == 0
        if periodic or (ending and not epoch_end):
            self.saver._save(trainer, f"step{step}")
            if self.cfg.keep_last and trainer.is_global_zero:
                for p in prune_step_saves(self.runlog.proj_dir, self.cfg.keep_last, self.cfg.adapter_format):
                    self.runlog.line(f"removed {p.name} (--keep_last {self.cfg.keep_last})")
        if ending:
            self.stopped_by = "signal" if signal_stop else "budget"
            why = f"{self.stop.name} received" if signal_stop else \
                f"budget of {self.budget} optimizer steps (--max_steps/--max_tokens) reached"
            self.runlog.say(f"stopping at step {step} (epoch {epoch}): {why}")
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module):
        step = trainer.global_step + self.step_offset
        if self.validator is not None and self.validator.last_step != step:
            self.validator.run(trainer, pl_module, step, self.cfg.epoch_begin + trainer.current_epoch)

    def _stop_requested(self, trainer, pl_module) -> bool:
        flag = bool(self.stop is not None and self.stop.requested)
        if trainer.world_size > 1:  # every rank must stop at the same step (a signal may reach one)
            t = torch.tensor(float(flag), device=pl_module.device)
            flag = float(trainer.strategy.reduce(t, reduce_op="sum")) > 0
            if flag and self.stop is not None and not self.stop.name:
                self.stop.name = "a stop signal on another rank"
        return flag

    # ----- resume state (inside last.ckpt) -----
    def state_dict(self) -> dict:
        return {"validator": self.validator.state_dict() if self.validator else {}}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.validator is not None:
            self.validator.load_state_dict(state_dict.get("validator", {}))
