"""Sequence log-probs of preference pairs and the reference policy of every method.

- The shared-prompt forward (prompt once, chosen and rejected from copies of its state) equals
  full-sequence forwards within 1e-5 (fp32), RWKV-7 and RWKV-6, each method; the full-sequence
  figure itself equals log_softmax of the model's plain logits (an independent computation).
- Inside the method's reference context the model computes the base model's logits exactly
  (MiSS, LoRA, state, full), PiSSA's the ORIGINAL weights' (W_res + B0 A0 = W up to fp32 rounding
  of the split); leaving it restores the trained policy.
"""
from __future__ import annotations

import pytest
import torch

from rwkvft.adapters import inject, parse_peft, registry
from rwkvft.data.preference import Pair, collate_pairs
from rwkvft.models.build import model_from_state_dict
from rwkvft.models.init import new_config, random_state_dict
from rwkvft.training.pair_logps import full_sequence_logps, shared_prompt_logps

METHODS = [("miss", {"r": 8}), ("miss-bat", {"r": 16, "mode": "bat"}), ("lora", {"r": 4}),
           ("pissa", {"r": 4}), ("state", {}), ("none", {})]


@pytest.fixture(scope="module", params=["x070", "x060"])
def base_sd(request):
    cfg = new_config(2, 128, 256, version=request.param)
    return {k: v.float() for k, v in random_state_dict(cfg, seed=1).items()}


def _pairs():
    g = torch.Generator().manual_seed(0)

    def rnd(n):
        return tuple(torch.randint(1, 256, (n,), generator=g).tolist())
    # two prompts of one length (one forward) and one of another; answers of 1 to 11 tokens
    return [Pair(rnd(5), rnd(7), rnd(3)), Pair(rnd(9), rnd(4), rnd(11)), Pair(rnd(5), rnd(1), rnd(2))]


def _fresh(sd):
    # own storage: full fine-tuning's stand-in training must not write into the shared fixture
    return model_from_state_dict({k: v.clone() for k, v in sd.items()}, dtype=torch.float32)


def _trained(sd, case):
    name, pc = case
    method = name.split("-")[0]
    model = _fresh(sd)
    acfg = parse_peft(method, pc)
    inj = inject(model, acfg, [])
    ref = registry.get(method).reference(model, acfg)   # taken before "training", as a run does
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # stand-in for training: every trainable tensor moves
        params = dict(model.named_parameters())
        for n in inj:
            params[n].add_(torch.randn(params[n].shape, generator=g) * 0.05)
    return model, ref


def _plain_logps(model, batch) -> torch.Tensor:
    """Row sums of log_softmax(model(idx)) at the answer targets: no code shared with ours."""
    logp = torch.log_softmax(model(batch["input_ids"]).float(), -1)
    tok = logp.gather(-1, batch["targets"][..., None])[..., 0]
    return (tok * batch["mask"]).sum(1)


@pytest.mark.parametrize("case", METHODS, ids=[c[0] for c in METHODS])
def test_shared_prompt_equals_full_sequences(base_sd, case):
    model, _ = _trained(base_sd, case)
    batch = collate_pairs(_pairs())
    with torch.no_grad():
        full, shared = full_sequence_logps(model, batch), shared_prompt_logps(model, batch)
        plain = _plain_logps(model, batch)
    B = len(_pairs())
    assert torch.allclose(torch.cat([full.chosen, full.rejected]), plain, rtol=1e-5, atol=1e-5)
    assert torch.allclose(shared.chosen, full.chosen, rtol=1e-5, atol=1e-5)
    assert torch.allclose(shared.rejected, full.rejected, rtol=1e-5, atol=1e-5)
    assert shared.chosen_n.tolist() == [7, 4, 1] and shared.rejected_n.tolist() == [3, 11, 2]
    assert shared.chosen.shape == (B,)


def test_shared_prompt_gradients_equal_full_sequences(base_sd):
    grads = []
    for fn in (full_sequence_logps, shared_prompt_logps):
        model, _ = _trained(base_sd, ("miss", {"r": 8}))
        lp = fn(model, collate_pairs(_pairs()))
        (lp.chosen.sum() - 0.5 * lp.rejected.sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", METHODS, ids=[c[0] for c in METHODS])
def test_reference_is_the_untrained_model(base_sd, case):
    base = _fresh(base_sd)
    model, ref = _trained(base_sd, case)
    idx = torch.randint(0, 256, (2, 21), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, policy = base(idx), model(idx)
        assert not torch.allclose(policy, want, atol=1e-4)  # training did change the policy
        with ref.active():
            got = ref.model(idx)
        after = model(idx)
    if case[0] == "pissa":  # x W_res^T + (x A0^T) B0^T against x W^T: fp32 rounding of the split
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got, want)
    assert torch.equal(after, policy)  # leaving the context restores the trained policy


def test_state_reference_is_the_starting_state_for_init_base(base_sd):
    """init "base" starts from a prompted state: the reference keeps that start, not zeros."""
    model, ref = _trained(base_sd, ("state", {"init": "base", "prompt_tokens": [3, 4, 5]}))
    fresh = _fresh(base_sd)
    inject(fresh, parse_peft("state", {"init": "base", "prompt_tokens": [3, 4, 5]}), [])
    idx = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), ref.active():
        assert torch.equal(model(idx), fresh(idx))
