"""One preference training step, and the scoring of a set of pairs (validation, `rwkvft eval`).

`PreferenceStep(objective, reference)` is what the Lightning module calls instead of the SFT
loss: policy log-probs through the shared-prompt forward, the reference's (DPO only) through the
same forward of the method's reference (adapters/reference.py) under no_grad, then the
objective's loss and metrics (training/preference.py).
"""
from __future__ import annotations

import torch

from .pair_logps import shared_prompt_logps
from .preference import Objective, PairLogps, preference_loss


class PreferenceStep:
    """`precomputed`: the batches carry the reference's log-prob sums (`ref_chosen`/`ref_rejected`,
    training/ref_logps.py) and no reference forward runs."""

    def __init__(self, objective: Objective, reference=None, head_chunk: int = 2048, precomputed: bool = False):
        if objective.needs_reference and reference is None and not precomputed:
            raise ValueError(f"--objective {objective.name} needs a reference policy")
        self.objective, self.reference, self.head_chunk = objective, reference, head_chunk
        self.precomputed = precomputed

    def reference_logps(self, model, batch: dict) -> PairLogps:
        ref = self.reference
        if ref.model is not model:  # full fine-tuning's frozen copy follows the policy's device
            device = model.head.weight.device
            if ref.model.head.weight.device != device:
                ref.model.to(device)
        with torch.no_grad(), ref.active():
            return shared_prompt_logps(ref.model, batch, self.head_chunk)

    def logps(self, model, batch: dict) -> tuple[PairLogps, PairLogps | None]:
        lp = shared_prompt_logps(model, batch, self.head_chunk)
        if not self.objective.needs_reference:
            return lp, None
        if self.precomputed:
            if "ref_chosen" not in batch:
                raise ValueError("a batch without the precomputed reference log-probs")
            c, r = (batch[k].to(lp.chosen.device, lp.chosen.dtype) for k in ("ref_chosen", "ref_rejected"))
            return lp, PairLogps(c, r, lp.chosen_n, lp.rejected_n, lp.nll.new_zeros(()))
        return lp, self.reference_logps(model, batch)

    def __call__(self, model, batch: dict):
        """(loss, metrics) of one micro-batch."""
        lp, ref = self.logps(model, batch)
        return preference_loss(self.objective, lp, *(() if ref is None else (ref.chosen, ref.rejected)))


def concat_logps(parts: list[PairLogps]) -> PairLogps:
    """The PairLogps of many micro-batches, NLL recomputed token-weighted over all of them."""
    cat = {k: torch.cat([getattr(p, k).detach().double().cpu() for p in parts])
           for k in ("chosen", "rejected", "chosen_n", "rejected_n")}
    nll = -cat["chosen"].sum() / cat["chosen_n"].sum().clamp(min=1)
    return PairLogps(**cat, nll=nll)


def score_pairs(model, step: PreferenceStep, pairs, batch_size: int, device,
                forward_context=None) -> dict:
    """The objective's loss and metrics over a whole list of pairs (validation, `rwkvft eval`):
    rewards/accuracies is the share of ALL pairs the policy ranks right, not a mean of batch means."""
    import contextlib

    from ..data.preference import collate_pairs
    was_training = model.training
    model.eval()
    ctx = forward_context or contextlib.nullcontext
    pol, ref = [], []
    try:
        with torch.no_grad():
            for s in range(0, len(pairs), batch_size):
                batch = _to(collate_pairs(pairs[s:s + batch_size]), device)
                with ctx():
                    lp, rp = step.logps(model, batch)
                pol.append(lp)
                if rp is not None:
                    ref.append(rp)
    finally:
        model.train(was_training)
    lp = concat_logps(pol)
    rp = concat_logps(ref) if ref else None
    loss, metrics = preference_loss(step.objective, lp, *(() if rp is None else (rp.chosen, rp.rejected)))
    return {"loss": float(loss), "pairs": len(pairs), **metrics}


def _to(batch: dict, device) -> dict:
    out = {}
    for k, v in batch.items():
        out[k] = [t.to(device) for t in v] if isinstance(v, list) else v.to(device)
    return out
