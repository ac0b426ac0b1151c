"""Callbacks: per-step metrics (loss.jsonl, progress bar), saving, plots, the human log."""
from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch

from ..errors import UserError
from ..utils import atomic_path


class RunLog:
    """train_log.txt (human) and loss.jsonl (machine). Only global rank 0 writes."""

    def __init__(self, proj_dir: Path, enabled: bool):
        self.proj_dir = Path(proj_dir)
        self.enabled = enabled

    def line(self, text: str) -> None:
        if self.enabled:
            with open(self.proj_dir / "train_log.txt", "a", encoding="utf-8") as f:
                f.write(text.rstrip("\n") + "\n")

    def say(self, text: str) -> None:
        """A line for train_log.txt and the console alike (the summaries a user watches for,
        with or without a terminal): printed once, by the rank that writes the log."""
        if self.enabled:
            self.line(text)
            print(text.rstrip("\n"), flush=True)

    def record(self, row: dict) -> None:
        if self.enabled:
            with open(self.proj_dir / "loss.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


class StepMetrics(L.Callback):
    """After every optimizer step: loss, lr, tokens and tokens/s into loss.jsonl and the bar.

    Tokens are real tokens: the non-padding positions of every rank's batches (`real_tokens`
    of the batch; every position when a batch has no such count). `padding` is the fraction of
    the step's positions that were padding.
    """

    def __init__(self, log: RunLog, step_offset: int, epoch_begin: int = 0):
        self.runlog = log
        self.epoch_begin = epoch_begin
        self.step_offset = step_offset
        self.tokens = 0
        self.epoch_losses: list[float] = []
        self._t_step = None
        self._t_epoch = None
        self._acc_losses: list[float] = []
        self._acc_counts = [0, 0]   # real tokens, positions (this rank, since the last step)
        self._acc_metrics: list[dict] = []  # preference metrics of the step's micro-batches
        self._last_step = -1
        self.last_row: dict = {}            # the newest loss.jsonl row (console.PlainProgress)

    def on_train_start(self, trainer, pl_module):
        self.on_train_epoch_start(trainer, pl_module)  # a mid-epoch resume gets no epoch start

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_losses = []
        self._t_epoch = self._t_step = time.perf_counter()
        self._epoch_counts = [0, 0]
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._acc_losses.append(float(loss.detach()))
        if isinstance(outputs, dict) and outputs.get("metrics"):
            self._acc_metrics.append(outputs["metrics"])
        positions = batch["input_ids"].numel()
        self._acc_counts[0] += int(batch["real_tokens"]) if "real_tokens" in batch else positions
        self._acc_counts[1] += positions
        if trainer.global_step == self._last_step:
            return  # gradient accumulation: no optimizer step on this micro-batch
        self._last_step = trainer.global_step
        real, positions = _sum_over_ranks(trainer, pl_module, self._acc_counts)
        now = time.perf_counter()
        dt = max(now - self._t_step, 1e-9)
        self._t_step = now
        step_loss = sum(self._acc_losses) / len(self._acc_losses)
        self.tokens += real
        self._epoch_counts = [self._epoch_counts[0] + real, self._epoch_counts[1] + positions]
        tps = real / dt
        extra = _mean_over_ranks(trainer, pl_module, self._acc_metrics)
        self._acc_losses, self._acc_counts, self._acc_metrics = [], [0, 0], []
        self.epoch_losses.append(step_loss)
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        pl_module.log("lr", lr, prog_bar=True, on_step=True, batch_size=1)
        pl_module.log("kt/s", tps / 1000, prog_bar=True, on_step=True, batch_size=1)
        for k, v in extra.items():  # TensorBoard / wandb (not the bar: the module shows a subset)
            pl_module.log(k, v, prog_bar=False, on_step=True, batch_size=1)
        self.last_row = {"step": trainer.global_step + self.step_offset,
                         "epoch": self.epoch_begin + trainer.current_epoch,
                         "loss": step_loss, "lr": lr, "tokens": self.tokens,
                         "tokens_per_s": round(tps, 1), "padding": round(1 - real / max(positions, 1), 4),
                         **extra}
        self.runlog.record(self.last_row)

    # Saved in last.ckpt, so a resumed run's loss.jsonl carries on counting tokens.
    def state_dict(self) -> dict:
        return {"tokens": self.tokens}

    def load_state_dict(self, state_dict: dict) -> None:
        self.tokens = int(state_dict.get("tokens", 0))

    def epoch_summary(self) -> dict:
        elapsed = time.perf_counter() - (self._t_epoch or time.perf_counter())
        mean = sum(self.epoch_losses) / max(1, len(self.epoch_losses))
        real, positions = self._epoch_counts
        return {"loss": mean, "tokens": real, "seconds": elapsed,
                "tokens_per_s": real / max(elapsed, 1e-9), "padding": 1 - real / max(positions, 1)}


def _mean_over_ranks(trainer, pl_module, rows: list[dict]) -> dict:
    """Each metric's mean over the step's micro-batches and (DDP) over the ranks: every rank has
    the same number of equal-sized micro-batches, so this is the mean over all pairs."""
    if not rows:
        return {}
    keys = sorted(rows[0])
    local = torch.tensor([[r[k] for k in keys] for r in rows], dtype=torch.float64).mean(0)
    if trainer.world_size > 1:
        local = trainer.strategy.reduce(local.to(pl_module.device), reduce_op="mean").cpu()
    return {k: float(v) for k, v in zip(keys, local)}


def _sum_over_ranks(trainer, pl_module, counts: list[int]) -> tuple[int, int]:
    """(real tokens, positions) of all ranks together (one small all-reduce per step)."""
    if trainer.world_size <= 1:
        return counts[0], counts[1]
    total = trainer.strategy.reduce(torch.tensor(counts, dtype=torch.long, device=pl_module.device),
                                    reduce_op="sum")
    return int(total[0]), int(total[1])


class SaveAdapter(L.Callback):
    """Every `epoch_save` epochs, at the last epoch and at --my_exit: adapter + resume state.

    Files: rwkv-{epoch}.pth (+ adapter_config.json), last.ckpt (slim Lightning checkpoint for
    --resume) and loss.png. Each is written to a temp file and renamed, so an interrupted save
    (or a full disk) leaves the previous files intact.
    """

    def __init__(self, save_fn, log: RunLog, metrics: StepMetrics, plot_fn, epoch_begin: int = 0,
                 epoch_save: int = 1, my_exit: int = 0):
        self.save_fn = save_fn          # (epoch_number) -> Path, rank 0 only
        self.runlog = log
        self.metrics = metrics
        self.plot_fn = plot_fn
        self.epoch_begin, self.epoch_save, self.my_exit = epoch_begin, epoch_save, my_exit

    def on_train_epoch_end(self, trainer, pl_module):
        if not epoch_complete(trainer):
            return  # stopped inside the epoch (budget or signal): that stop saved a step file
        done = trainer.current_epoch + 1
        epoch_no = self.epoch_begin + trainer.current_epoch
        stop_here = self.my_exit and done >= self.my_exit
        last = done >= trainer.max_epochs or stop_here or trainer.should_stop
        summary = self.metrics.epoch_summary()
        self.runlog.say(f"epoch {epoch_no}: loss {summary['loss']:.4f} ppl "
                      f"{_ppl(summary['loss']):.2f} lr {trainer.optimizers[0].param_groups[0]['lr']:.3g} "
                      f"tokens {summary['tokens']} tokens/s {summary['tokens_per_s']:.0f} "
                      f"padding {100 * summary['padding']:.1f}% "
                      f"time {summary['seconds']:.1f}s")
        if done % self.epoch_save == 0 or last:
            self._save(trainer, epoch_no)
        if stop_here and not done >= trainer.max_epochs:
            self.runlog.say(f"stopping after epoch {epoch_no} (--my_exit {self.my_exit}); "
                          f"continue with --resume")
            trainer.should_stop = True

    def _save(self, trainer, label) -> None:
        """Adapter rwkv-{label} (label: epoch number or "step{S}") + last.ckpt; every rank calls it."""
        from .ds import full_params
        from .safety import install_checkpoint, remove_path, save_error_text
        with full_params(trainer, (p for p in trainer.lightning_module.parameters() if p.requires_grad)):
            if trainer.is_global_zero:  # ZeRO-3: the adapters are whole inside, on every rank
                self.save_fn(label)
        ckpt = Path(self.runlog.proj_dir) / "last.ckpt"
        tmp = ckpt.with_name(".last.ckpt.tmp")  # a file, or a folder under DeepSpeed
        if trainer.is_global_zero:
            remove_path(tmp)  # a failed save's leftovers must not mix into this one
        trainer.strategy.barrier()
        # collective: every rank must call it. The optimizer state is needed for --resume.
        try:
            trainer.save_checkpoint(tmp, weights_only=False)
        except (OSError, RuntimeError) as e:  # a full disk: torch.save raises RuntimeError
            remove_path(tmp)
            raise UserError(f"could not save {ckpt} ({save_error_text(e)}); the previous "
                            f"last.ckpt and the adapters saved so far are intact") from None
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            install_checkpoint(tmp, ckpt)
            self.plot_fn()
        trainer.strategy.barrier()  # no rank writes the next .last.ckpt.tmp before this one moved


def epoch_complete(trainer) -> bool:
    """False when the epoch ended early (should_stop inside it), True at its last batch."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.ready
    return done >= trainer.num_training_batches


def _ppl(loss: float) -> float:
    return float(torch.tensor(min(loss, 50.0)).exp())


def plot_losses(proj_dir: Path) -> None:
    """Draw loss.png from loss.jsonl (per-step loss and a moving average)."""
    fig = loss_figure(proj_dir)
    if fig is None:
        return
    import matplotlib.pyplot as plt
    with atomic_path(Path(proj_dir) / "loss.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def loss_figure(proj_dir: Path):
    """The matplotlib figure of loss.png, or None while loss.jsonl has no training row."""
    rows = []
    path = Path(proj_dir) / "loss.jsonl"
    if not path.exists():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    val = [r for r in rows if r.get("kind") == "val"]
    tasks = [r for r in rows if r.get("kind") == "tasks"]
    rows = [r for r in rows if r.get("kind", "train") == "train"]
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    k = max(1, len(losses) // 50)
    smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1])
              for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(steps, losses, color="#9db4d6", linewidth=0.8, label="loss")
    ax.plot(steps, smooth, color="#1f4e9c", linewidth=1.8, label=f"moving average ({k})")
    if val:  # the validation curve (--val_file / --val_split)
        ax.plot([r["step"] for r in val], [r["loss"] for r in val], color="#d9480f", marker="o",
                markersize=3.5, linewidth=1.5, label="validation loss")
    twins = [_plot_task_scores(ax, tasks)] if tasks else []
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(f"{Path(proj_dir).name}: training loss" + (" and validation loss" if val else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    twins += _plot_preference_accuracy(ax, rows, val, legend="lower right" if twins else "upper right")
    if len(twins) == 2:  # task scores and preference accuracy: the second axis further out
        twins[1].spines["right"].set_position(("outward", TWIN_OFFSET_PT))
    fig.tight_layout()
    return fig


TWIN_OFFSET_PT = 62   # clears the first right-hand axis's tick labels and its label


def _plot_task_scores(ax, rows: list[dict]):
    """--eval_tasks scores of each save, on a second axis (scores, not losses)."""
    twin = ax.twinx()
    for key in sorted({k for r in rows for k in r.get("scores", {})}):
        pts = [(r["step"], r["scores"][key]) for r in rows if key in r.get("scores", {})]
        twin.plot([p[0] for p in pts], [p[1] for p in pts], marker="s", markersize=3.5,
                  linewidth=1.2, linestyle="--", label=key)
    twin.set_ylabel("task score")
    twin.legend(loc="upper right", fontsize=8)
    return twin


def _plot_preference_accuracy(ax, rows: list[dict], val: list[dict], legend: str) -> list:
    """Preference runs: rewards/accuracies (train, and validation) on a second axis."""
    key = "rewards/accuracies"
    if not any(key in r for r in rows):
        return []
    acc = ax.twinx()
    acc.set_ylim(0, 1.02)
    acc.set_ylabel("preference accuracy")
    acc.plot([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r],
             color="#2b8a3e", linewidth=0.8, alpha=0.7, label="accuracy")
    if any(key in r for r in val):
        acc.plot([r["step"] for r in val if key in r], [r[key] for r in val if key in r],
                 color="#5c940d", marker="s", markersize=3.5, linewidth=1.5, label="validation accuracy")
    acc.legend(loc=legend)
    return [acc]


def truncate_loss_log(proj_dir: Path, last_step: int) -> int:
    """--resume: drop loss.jsonl rows after the checkpointed step (a killed run logged steps
    that the resumed run replays), so the file reads as one run. Returns the rows dropped."""
    path = Path(proj_dir) / "loss.jsonl"
    if not path.exists():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    keep = [ln for ln in lines if _row_step(ln) is not None and _row_step(ln) <= last_step]
    if len(keep) != len(lines):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")
    return len(lines) - len(keep)


def _row_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):  # a line cut by a kill
        return None
