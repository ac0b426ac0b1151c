"""Saving the adapter during a run: rwkv-{label} files (+ adapter_config.json) and, with
--sample_prompts, the samples written at every save."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from . import safety
from .callbacks import RunLog


def fingerprint_of(base_sd) -> dict:
    from ..adapters.fingerprint import fingerprint
    return fingerprint(base_sd)


class AdapterSaver:
    """Writes rwkv-{epoch}.{pth,safetensors} (+ adapter_config.json) on rank 0 and remembers
    what it wrote. For a full_model method (--peft none) the file is the whole model."""

    def __init__(self, plan, model, trainable: list[str], base_fp: dict, log: RunLog,
                 sampler=None):
        self.plan, self.model, self.trainable = plan, model, list(trainable)
        self.base_fp, self.log = base_fp, log
        self.saved: list[Path] = []
        self.sampler = sampler              # --sample_prompts: continuations at every save
        self.samples: list = []
        self.module = None                  # the FineTuneModule, once built (for the samples)
        # after each tracked save: hook(model, path, step, epoch, device, forward_context,
        # save_best) -- e.g. --eval_tasks' scorer, built by the caller of train (save_hooks)
        self.hooks: list = []

    def tensors(self) -> dict:
        """The tensors to save. Under ZeRO-3 the caller gathers them first (ds.full_params):
        a shard reads as an empty tensor, which is refused here rather than saved."""
        from ..adapters import adapter_state_dict
        if self.plan.method.full_model:   # every tensor of the model, official names and shapes
            out = {k: v.detach().float().cpu().clone() for k, v in self.model.state_dict().items()}
        else:
            out = {k: v.detach().float().cpu().clone()
                   for k, v in adapter_state_dict(self.model, self.trainable).items()}
        empty = [k for k, v in out.items() if v.numel() == 0]
        if empty:
            raise UserError(f"the tensors to save {empty[:3]} are empty (ZeRO-3 shards that were "
                            f"not gathered); please report this")
        return out

    def __call__(self, label, track: bool = True) -> Path:
        """Write rwkv-{label} (label: epoch number, "step{S}" or "best"; track=False for best,
        which is not "the adapter" of the run)."""
        from ..formats import save_adapter
        path = self.plan.proj / f"rwkv-{label}.{self.plan.cfg.adapter_format}"
        try:
            save_adapter(path, self.tensors(), self.plan.peft, self.base_fp)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError
            prev = self.saved[-1].name if self.saved else "none yet"
            raise UserError(f"could not save the adapter to {path} ({safety.save_error_text(e)}); "
                            f"the previous save ({prev}) is intact") from None
        if not track:
            return path
        self.saved.append(path)
        self.log.say(f"saved {path}")
        if self.sampler is not None and self.module is not None:
            self._write_samples(path)
        if self.module is not None:
            self._run_hooks(path)
        return path

    def _run_hooks(self, path: Path) -> None:
        m = self.module
        for hook in self.hooks:
            hook(self.model, path, m.global_step + m.step_offset, m.current_epoch, m.device,
                 m.trainer.precision_plugin.forward_context, lambda: self("best", track=False))

    def _write_samples(self, path: Path) -> None:
        m = self.module
        step = m.global_step + m.step_offset
        self.sampler.write(self.model, f"step {step}: {path.name}", m.device,
                           m.trainer.precision_plugin.forward_context)
        self.log.line(f"samples for {path.name} written to {self.sampler.path}")
        self.samples.append((path.name, list(self.sampler.last)))


def sample_writer(cfg, vocab_size: int):
    """--sample_prompts: the writer of samples.md (None without the flag)."""
    if not cfg.sample_prompts:
        return None
    from ..data.formats import Roles
    from .samples import SampleWriter, read_prompts
    writer = SampleWriter(read_prompts(cfg.sample_prompts, Roles(cfg.user_role, cfg.assistant_role,
                                                                  cfg.system_role, cfg.chat_template,
                                                                  cfg.train_on_think)),
                          cfg.proj_dir, cfg.sample_tokens)
    writer.check_model(vocab_size)
    return writer
