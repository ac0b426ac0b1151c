"""What `rwkvft train --objective dpo|orpo|simpo` adds to the SFT recipe (training/run.py):

    read_preference_data    plan_run: the pairs are read and checked before any model is loaded
    PreferenceData.datasets build_data: the PairDataset and the held-out pairs
    preference_step         build_trainer: the step the Lightning module calls (with the
                            method's reference policy for DPO, adapters/reference.py, or the
                            precomputed log-probs of --ref_logps, training/ref_logps.py)
    PreferenceValidator     --val_file / --val_split: the same metrics on held-out pairs;
                            --save_best keeps the adapter with the best preference accuracy
Everything else (saving, resume, signals, budgets, merge, export) is the SFT run's.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..errors import UserError
from .preference import Objective
from .preference_step import PreferenceStep, score_pairs

PAIR_DATA_TYPES = ("jsonl", "sft")  # .jsonl, and .json / .parquet (read_sft's files)


@dataclass
class PreferenceData:
    pairs: list
    stats: object
    val_pairs: list | None

    def datasets(self, plan, vocab_size: int):
        """(training PairDataset, held-out pairs or None)."""
        from ..data.preference import PairDataset
        top = max(max(p.prompt + p.chosen + p.rejected) for p in self.pairs + (self.val_pairs or []))
        if top >= vocab_size:
            raise UserError(f"token id {top} of the preference data is outside the model's vocabulary "
                            f"(0..{vocab_size - 1}); pairs are tokenized with the World tokenizer (65536)")
        cfg = plan.cfg
        n = cfg.epoch_steps * cfg.micro_bsz * plan.world
        return PairDataset(self.pairs, self.stats, n, cfg.random_seed), self.val_pairs


def read_preference_data(cfg, method) -> PreferenceData | None:
    if cfg.objective == "sft":
        return None
    from ..data.from_flags import resolve_data_type
    from ..data.preference import pair_roles, read_pairs
    kind = resolve_data_type(cfg)
    if kind not in PAIR_DATA_TYPES:
        raise UserError(f"--objective {cfg.objective} trains on preference pairs (records with "
                        f"\"prompt\", \"chosen\", \"rejected\" in .jsonl/.json/.parquet), but --data_file "
                        f"{cfg.data_file} is {kind} data; use --objective sft for plain text")
    if cfg.ref_logps:
        from .ref_logps import check_flags
        check_flags(cfg)
    elif cfg.objective == "dpo" and method.reference is None:
        raise UserError(f"--objective dpo needs a reference policy, which --peft {method.name} does "
                        f"not define; use --objective simpo or orpo (no reference)")
    roles = pair_roles(cfg)
    pairs, stats = read_pairs(cfg.data_file, cfg.ctx_len, roles, cfg.max_bad_fraction)
    if cfg.ref_logps:   # every check of the file, the base's fingerprint included, before loading
        from .ref_logps import attach
        pairs = attach(cfg, pairs)
    val = None
    if cfg.val_file:
        val, _ = read_pairs(cfg.val_file, cfg.ctx_len, roles, cfg.max_bad_fraction, what="--val_file")
    elif cfg.val_split:
        from .validation import split_documents
        held = set(split_documents(len(pairs), cfg.val_split, cfg.random_seed).tolist())
        val = [p for i, p in enumerate(pairs) if i in held]
        pairs = [p for i, p in enumerate(pairs) if i not in held]
    return PreferenceData(pairs, stats, val)


def preference_step(plan, model) -> PreferenceStep | None:
    """The step of a preference run (None for sft). The reference is taken now: after inject
    and --adapter_init, before training, so it is the policy the run starts from."""
    cfg = plan.cfg
    if cfg.objective == "sft":
        return None
    objective = Objective.from_config(cfg)
    if cfg.ref_logps:   # the pairs carry the reference's log-probs: no reference forward, no copy
        _check_reference_is_base(plan, model)
        return PreferenceStep(objective, None, cfg.head_chunk, precomputed=True)
    ref = plan.method.reference(model, plan.peft) if objective.needs_reference else None
    return PreferenceStep(objective, ref, cfg.head_chunk)


def _check_reference_is_base(plan, model) -> None:
    """--ref_logps holds the BASE model's log-probs: refuse a method whose own reference is not the
    base (a state prompted at init "base"). Full fine-tuning's reference is a copy of the
    starting model, the base (--adapter_init is refused earlier): no copy is made to ask."""
    if plan.method.full_model or plan.method.reference is None:
        return
    if not plan.method.reference(model, plan.peft).is_base:
        raise UserError(f"--ref_logps holds the base model's log-probs, but this --peft {plan.method.name} "
                        f"policy starts elsewhere (its reference is its starting state); drop --ref_logps")


def make_preference_validator(cfg, val_pairs, step, saver, log, rank0: bool):
    if not val_pairs:
        return None
    best = (lambda: saver("best", track=False)) if cfg.save_best else None
    if rank0:
        log.line(f"validation: {len(val_pairs)} preference pairs from "
                 f"{cfg.val_file or f'--val_split {cfg.val_split}'}")
    return PreferenceValidator(val_pairs, step, cfg, log, best)


class PreferenceValidator:
    """The Validator of a preference run (training/validation.py has the SFT one; StepEvents calls
    either). Every rank scores all held-out pairs (a small set), so ranks agree without a reduce.
    Best = highest rewards/accuracies, ties broken by the lower loss."""

    def __init__(self, pairs, step: PreferenceStep, cfg, runlog, save_best=None):
        self.pairs, self.step, self.cfg, self.runlog = pairs, step, cfg, runlog
        self.save_best = save_best
        self.best = (-math.inf, -math.inf)   # (accuracy, -loss)
        self.best_step = -1
        self.last_step = -1
        self.history: list[dict] = []

    def run(self, trainer, pl_module, step: int, epoch: int) -> dict:
        t0 = time.perf_counter()
        res = score_pairs(pl_module.model, self.step, self.pairs, self.cfg.micro_bsz, pl_module.device,
                          trainer.precision_plugin.forward_context)
        self.last_step = step
        row = {"kind": "val", "step": step, "epoch": epoch, **res,
               "seconds": round(time.perf_counter() - t0, 3)}
        self.history.append(row)
        self.runlog.record(row)
        self.runlog.line(f"val step {step} epoch {epoch}: loss {res['loss']:.4f} accuracy "
                         f"{res['rewards/accuracies']:.3f} margin {res['rewards/margins']:.4f} "
                         f"({res['pairs']} pairs)")
        pl_module.log("val_loss", res["loss"], prog_bar=True, batch_size=1)
        pl_module.log("val_acc", res["rewards/accuracies"], prog_bar=True, batch_size=1)
        score = (res["rewards/accuracies"], -res["loss"])
        if score > self.best:
            self.best, self.best_step = score, step
            if self.save_best is not None and trainer.is_global_zero:
                path = self.save_best()
                self.runlog.line(f"best: {path.name} is now step {step} (epoch {epoch}), "
                                 f"val accuracy {score[0]:.3f}")
        return res

    def state_dict(self) -> dict:
        return {"best": list(self.best), "best_step": self.best_step, "last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.best = tuple(state.get("best", (-math.inf, -math.inf)))
        self.best_step = int(state.get("best_step", -1))
        self.last_step = int(state.get("last_step", -1))
