"""Preference losses against TRL's own loss code, called on tensors (TRL is the oracle, spec
preference_tuning.md §0): DPO's sigmoid/hinge/ipo/robust (+ the "sft" term for --sft_weight)
through DPOTrainer._compute_loss with precomputed reference log-probs, ORPO through
ORPOTrainer.odds_ratio_loss, SimPO through CPOTrainer.cpo_loss. Within 1e-6."""
from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from rwkvft.training.preference import Objective, PairLogps, log1mexp, preference_loss

trl = pytest.importorskip("trl")
B, T = 6, 12


def _batch(seed: int):
    """TRL's layout: 2B rows [chosen..., rejected...], a completion mask after a prompt, the
    per-token log-probs its model would return (zero off the completion)."""
    g = torch.Generator().manual_seed(seed)
    plen = torch.randint(2, 5, (2 * B,), generator=g)
    clen = torch.randint(1, T - 5, (2 * B,), generator=g)
    pos = torch.arange(T)
    completion = ((pos >= plen[:, None]) & (pos < (plen + clen)[:, None])).long()
    per_token = -torch.rand(2 * B, T - 1, generator=g, dtype=torch.float64).float() * 3
    per_token = per_token * completion[:, 1:]
    ref = -torch.rand(2 * B, generator=g) * 20 - per_token.sum(1).abs() * 0.5
    return completion, per_token, ref


def _ours(completion, per_token) -> PairLogps:
    sums, n = per_token.sum(1), completion[:, 1:].sum(1).float()
    nll = -sums[:B].sum() / n[:B].sum()
    return PairLogps(sums[:B], sums[B:], n[:B], n[B:], nll)


def _trl_dpo(completion, per_token, ref, loss_types, weights, beta, eps):
    from trl import DPOTrainer
    outputs = SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token),
                              mean_logits=torch.zeros_like(per_token),
                              is_top1=torch.zeros_like(per_token, dtype=torch.bool))
    ident = lambda t: t  # noqa: E731
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=SimpleNamespace(
            device="cpu", gather_for_metrics=ident, gather=ident),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=loss_types, loss_weights=weights, beta=beta,
        label_smoothing=eps, use_weighting=False, _total_train_tokens=0, _tp_size=1,
        _metrics={"train": defaultdict(list)})
    inputs = {"input_ids": torch.ones(2 * B, T, dtype=torch.long), "attention_mask": torch.ones(2 * B, T),
              "completion_mask": completion, "ref_chosen_logps": ref[:B], "ref_rejected_logps": ref[B:]}
    loss = DPOTrainer._compute_loss(fake, lambda **kw: outputs, inputs, False)
    return loss, {k: v[-1] for k, v in fake._metrics["train"].items()}


@pytest.mark.parametrize("variant,beta,eps", [("sigmoid", 0.1, 0.0), ("hinge", 0.3, 0.0),
                                              ("ipo", 0.5, 0.0), ("robust", 0.2, 0.15)])
@pytest.mark.parametrize("sft_weight", [0.0, 0.4])
def test_dpo_variants_equal_trl(variant, beta, eps, sft_weight):
    completion, per_token, ref = _batch(seed=hash(variant) % 1000)
    types, weights = [variant], [1.0]
    if sft_weight:
        types, weights = [variant, "sft"], [1.0, sft_weight]
    want, want_m = _trl_dpo(completion, per_token, ref, types, weights, beta, eps)
    o = Objective("dpo", beta=beta, dpo_loss=variant, label_smoothing=eps, sft_weight=sft_weight)
    got, m = preference_loss(o, _ours(completion, per_token), ref[:B], ref[B:])
    assert abs(float(got) - float(want)) < 1e-6
    for k in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
              "logps/chosen", "logps/rejected"):
        assert abs(m[k] - want_m[k]) < 1e-6, k


@pytest.mark.parametrize("lam", [0.1, 0.7])
def test_orpo_equals_trl(lam):
    from trl.experimental.orpo import ORPOTrainer
    completion, per_token, _ = _batch(seed=3)
    lp = _ours(completion, per_token)
    fake = SimpleNamespace(beta=lam, accelerator=SimpleNamespace(device="cpu"))
    losses, rc, rr, ratio, log_odds = ORPOTrainer.odds_ratio_loss(fake, lp.chosen_mean, lp.rejected_mean)
    want = lp.nll - losses.mean()  # TRL's get_batch_loss_metrics: nll - mean(beta * logσ)
    got, m = preference_loss(Objective("orpo", beta=lam, orpo_lambda=lam), lp)
    assert abs(float(got) - float(want)) < 1e-6
    assert abs(m["log_odds_ratio"] - float(ratio)) < 1e-6
    assert abs(m["log_odds_chosen"] - float(log_odds)) < 1e-6
    assert abs(m["rewards/chosen"] - float(rc.mean())) < 1e-6
    assert abs(m["rewards/margins"] - float((rc - rr).mean())) < 1e-6


@pytest.mark.parametrize("beta,gamma,eps,sft", [(2.0, 0.5, 0.0, 0.0), (2.5, 1.2, 0.1, 0.0),
                                                (0.1, 0.5, 0.0, 1.0)])
def test_simpo_equals_trl(beta, gamma, eps, sft):
    from trl.experimental.cpo import CPOTrainer
    completion, per_token, _ = _batch(seed=5)
    lp = _ours(completion, per_token)
    fake = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=gamma, beta=beta,
                           label_smoothing=eps, accelerator=SimpleNamespace(device="cpu"))
    losses, rc, rr = CPOTrainer.cpo_loss(fake, lp.chosen_mean, lp.rejected_mean)
    want = losses.mean() + sft * lp.nll  # cpo_alpha x NLL (CPO-SimPO) = our --sft_weight
    got, m = preference_loss(Objective("simpo", beta=beta, simpo_gamma=gamma, label_smoothing=eps,
                                       sft_weight=sft), lp)
    assert abs(float(got) - float(want)) < 1e-6
    assert abs(m["rewards/chosen"] - float(rc.mean())) < 1e-6
    assert abs(m["rewards/accuracies"] - float((rc > rr).float().mean())) < 1e-6


def test_log1mexp_matches_trl_on_both_branches():
    from trl.experimental.orpo.orpo_trainer import log1mexp as trl_log1mexp
    x = -torch.logspace(-6, 2, 200)
    assert torch.allclose(log1mexp(x), trl_log1mexp(x), rtol=1e-6, atol=1e-7)
    assert torch.isfinite(log1mexp(torch.tensor([-1e-7, -50.0]))).all()


def test_default_beta_per_objective():
    from rwkvft.config import TrainConfig
    for objective, beta in (("dpo", 0.1), ("simpo", 2.0), ("orpo", 0.3)):
        cfg = TrainConfig(objective=objective, orpo_lambda=0.3)
        assert Objective.from_config(cfg).beta == beta
    assert Objective.from_config(TrainConfig(objective="dpo", beta=0.5)).beta == 0.5
