"""The LightningModule: forward, masked loss, AdamW with the chosen LR schedule."""
from __future__ import annotations

import math

import lightning as L
import torch

from ..errors import UserError
from .infctx import chunk_len
from .infctx import batch_loss
from .schedule import lr_at


class NonFiniteLoss(RuntimeError):
    """Raised from training_step when the loss is NaN/Inf, so the run stops at once."""

    def __init__(self, step: int, epoch: int, value: float):
        super().__init__(f"loss is {value} at step {step} (epoch {epoch})")
        self.step, self.epoch, self.value = step, epoch, value


class FineTuneModule(L.LightningModule):
    """Wraps a plain RWKV model whose trainable set was resolved by `adapters.inject`.

    Lightning checkpoints (used for --resume) hold only the trainable tensors: the frozen base
    comes from --load_model, so `strict_loading` is off and `on_load_checkpoint` checks the keys.
    """

    def __init__(self, model, trainable: list[str], cfg, total_steps: int, step_offset: int,
                 dataset=None, preference=None):
        super().__init__()
        self.model = model
        self.trainable = list(trainable)
        self.cfg = cfg
        self.total_steps = total_steps
        self.step_offset = step_offset
        self.strict_loading = False
        self.dataset = dataset  # its epoch is advanced at each epoch start
        # training.preference_step.PreferenceStep for --objective dpo|orpo|simpo (None: SFT)
        self.preference = preference

    # ----- training -----
    def on_train_epoch_start(self):
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.cfg.epoch_begin + self.current_epoch)

    def training_step(self, batch, batch_idx):
        metrics = None
        if self.preference is not None:
            loss, metrics = self.preference(self.model, batch)
        else:
            loss = batch_loss(self.model, batch["input_ids"], batch["targets"], batch["mask"],
                              chunk=self.cfg.head_chunk, chunk_ctx=chunk_len(self.cfg),
                              bptt=self.cfg.infctx_bptt)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(self.global_step, self.cfg.epoch_begin + self.current_epoch,
                                float(loss.detach()))
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, batch_size=batch["input_ids"].shape[0])
        if metrics is None:
            return loss
        # the bar shows a short subset; StepMetrics writes every metric to loss.jsonl and loggers
        self.log("acc", metrics["rewards/accuracies"], prog_bar=True, on_step=True, batch_size=1)
        self.log("margin", metrics["rewards/margins"], prog_bar=True, on_step=True, batch_size=1)
        return {"loss": loss, "metrics": metrics}

    def configure_optimizers(self):
        cfg = self.cfg
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        decay = [p for n, p in named if p.ndim >= 2 and cfg.weight_decay > 0]
        no_decay = [p for n, p in named if not (p.ndim >= 2 and cfg.weight_decay > 0)]
        groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
        opt = torch.optim.AdamW(groups, lr=cfg.lr_init, betas=(cfg.beta1, cfg.beta2),
                                eps=cfg.adam_eps)
        offset, total = self.step_offset, self.total_steps

        def factor(step: int) -> float:
            return lr_at(step + offset, total, cfg.lr_init, cfg.lr_final, cfg.warmup_steps,
                         cfg.lr_schedule, cfg.wsd_decay_frac) / cfg.lr_init

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----- slim checkpoints for --resume -----
    def on_save_checkpoint(self, checkpoint):
        keep = {f"model.{n}" for n in self.trainable}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["rwkvft_trainable"] = self.trainable

    def on_load_checkpoint(self, checkpoint):
        # RWKV-PEFT's resume silently loaded nothing (its issue #63): count what we load.
        if "state_dict" not in checkpoint:
            # DeepSpeed's folder: its engine loads the module states itself, and
            # safety.check_resume_tensors compared the folder's tensors before training
            return
        want = {f"model.{n}" for n in self.trainable}
        have = set(checkpoint["state_dict"])
        if have != want:
            missing = sorted(want - have)[:3]
            extra = sorted(have - want)[:3]
            raise UserError(f"--resume: the saved run's trainable tensors do not match this "
                            f"config (missing {missing}, unexpected {extra}); resume with the "
                            f"same --peft/--peft_config/--train_parts")


def total_optimizer_steps(cfg) -> tuple[int, int]:
    """(total steps of the whole schedule, steps already done before epoch_begin)."""
    per_epoch = math.ceil(cfg.epoch_steps / cfg.accumulate_grad_batches)
    return per_epoch * (cfg.epoch_begin + cfg.epoch_count), per_epoch * cfg.epoch_begin
