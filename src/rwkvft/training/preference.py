"""Preference objectives (DPO and its variants, ORPO, SimPO) on per-sequence log-probabilities.

Everything here works on (B,) tensors per pair, so the maths is one place whatever produced the
log-probs (a full-sequence forward, the shared-prompt forward, or precomputed reference values):
  chosen, rejected          policy log-prob SUMS over each response's tokens
  chosen_n, rejected_n      the number of response tokens (for length-normalised objectives)
  ref_chosen, ref_rejected  the reference model's sums (DPO only; None for ORPO / SimPO)
  nll                       mean cross-entropy per chosen-response token over the batch (token-
                            weighted, as TRL's "sft" loss type): ORPO's NLL term and --sft_weight

Formulas and defaults follow shared/specs/preference_tuning.md §2, §4, §5 (TRL's loss code is the
test oracle, tests/training/test_preference_losses.py):
  dpo sigmoid  -logσ(β δ), δ = (c - c_ref) - (r - r_ref)                  (summed log-probs)
  dpo hinge    relu(1 - β δ)
  dpo ipo      (δ_avg - 1/(2β))², the log-ratios divided by their response lengths
  dpo robust   [-(1-ε) logσ(β δ) + ε logσ(-β δ)] / (1 - 2ε), ε = --label_smoothing
  orpo         NLL + λ·mean(-logσ(log_odds)) on per-token MEAN log-probs; log_odds =
               (c̄ - r̄) - (log1mexp(c̄) - log1mexp(r̄))
  simpo        -(1-ε) logσ(β z) - ε logσ(-β z), z = (c̄ - r̄) - γ/β      (mean log-probs)
Every objective adds --sft_weight x NLL (RPO / CPO-SimPO style; 0 = off).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config.flags import DPO_LOSSES, OBJECTIVES  # noqa: F401 - the flags' words, declared there
# --beta -1 means the objective's usual value: DPO's 0.1 (TRL); SimPO's own repository uses 2.0
# ("SimPO requires a much larger beta than DPO"); ORPO reports rewards with its lambda
DEFAULT_BETA = {"dpo": 0.1, "simpo": 2.0}


@dataclass(frozen=True)
class Objective:
    """The preference settings of a run (TrainConfig's --objective ... --sft_weight)."""
    name: str = "dpo"
    beta: float = 0.1
    dpo_loss: str = "sigmoid"
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5
    orpo_lambda: float = 0.1
    sft_weight: float = 0.0

    @property
    def needs_reference(self) -> bool:
        return self.name == "dpo"

    @classmethod
    def from_config(cls, cfg) -> "Objective":
        usual = {**DEFAULT_BETA, "orpo": cfg.orpo_lambda}.get(cfg.objective, 0.1)
        beta = usual if cfg.beta == -1 else cfg.beta
        return cls(cfg.objective, float(beta), cfg.dpo_loss, cfg.label_smoothing, cfg.simpo_gamma,
                   cfg.orpo_lambda, cfg.sft_weight)


@dataclass
class PairLogps:
    """Per-pair log-probability sums and response lengths, (B,) each."""
    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_n: torch.Tensor
    rejected_n: torch.Tensor
    nll: torch.Tensor | None = None   # scalar, see module docstring

    @property
    def chosen_mean(self) -> torch.Tensor:
        return self.chosen / self.chosen_n.clamp(min=1)

    @property
    def rejected_mean(self) -> torch.Tensor:
        return self.rejected / self.rejected_n.clamp(min=1)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Mächler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def dpo_losses(o: Objective, lp: PairLogps, ref_chosen, ref_rejected):
    """(per-pair losses, chosen rewards, rejected rewards) of DPO variant o.dpo_loss."""
    c_ratio, r_ratio = lp.chosen - ref_chosen, lp.rejected - ref_rejected
    delta = c_ratio - r_ratio
    b, eps = o.beta, o.label_smoothing
    if o.dpo_loss == "sigmoid":
        losses = -F.logsigmoid(b * delta)
    elif o.dpo_loss == "hinge":
        losses = torch.relu(1 - b * delta)
    elif o.dpo_loss == "ipo":
        avg = c_ratio / lp.chosen_n.clamp(min=1) - r_ratio / lp.rejected_n.clamp(min=1)
        losses = (avg - 1 / (2 * b)) ** 2
    elif o.dpo_loss == "robust":
        losses = (-(1 - eps) * F.logsigmoid(b * delta) + eps * F.logsigmoid(-b * delta)) / (1 - 2 * eps)
    else:
        raise ValueError(f"unknown DPO loss {o.dpo_loss!r}")
    return losses, b * c_ratio.detach(), b * r_ratio.detach()


def simpo_losses(o: Objective, lp: PairLogps):
    z = (lp.chosen_mean - lp.rejected_mean) - o.simpo_gamma / o.beta
    eps = o.label_smoothing
    losses = -F.logsigmoid(o.beta * z) * (1 - eps) - F.logsigmoid(-o.beta * z) * eps
    return losses, o.beta * lp.chosen_mean.detach(), o.beta * lp.rejected_mean.detach()


def orpo_terms(lp: PairLogps):
    """(logσ(log_odds) per pair, log_odds per pair), in fp32."""
    c, r = lp.chosen_mean.float(), lp.rejected_mean.float()
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    return F.logsigmoid(log_odds), log_odds


def preference_loss(o: Objective, lp: PairLogps, ref_chosen=None, ref_rejected=None):
    """(scalar loss, metrics {name: float}) for one micro-batch of pairs."""
    extra = {}
    if o.name == "dpo":
        losses, rc, rr = dpo_losses(o, lp, ref_chosen, ref_rejected)
        loss = losses.mean()
    elif o.name == "simpo":
        losses, rc, rr = simpo_losses(o, lp)
        loss = losses.mean()
    elif o.name == "orpo":
        ratio, log_odds = orpo_terms(lp)
        loss = lp.nll - o.orpo_lambda * ratio.mean()
        rc, rr = o.beta * lp.chosen_mean.detach(), o.beta * lp.rejected_mean.detach()
        extra = {"log_odds_ratio": float(ratio.detach().mean()),
                 "log_odds_chosen": float(log_odds.detach().mean())}
    else:
        raise ValueError(f"unknown preference objective {o.name!r}")
    if o.sft_weight:
        loss = loss + o.sft_weight * lp.nll
    if lp.nll is not None:
        extra["nll_loss"] = float(lp.nll.detach())
    return loss, {**reward_metrics(rc, rr, lp), **extra}


def reward_metrics(chosen_rewards, rejected_rewards, lp: PairLogps) -> dict:
    """TRL's names (spec §8): means over the micro-batch's pairs."""
    margins = chosen_rewards - rejected_rewards
    return {"rewards/chosen": float(chosen_rewards.mean()),
            "rewards/rejected": float(rejected_rewards.mean()),
            "rewards/accuracies": float((margins > 0).float().mean()),
            "rewards/margins": float(margins.mean()),
            "logps/chosen": float(lp.chosen.detach().mean()),
            "logps/rejected": float(lp.rejected.detach().mean())}
