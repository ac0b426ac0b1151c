"""Activation checkpointing (--grad_cp 1) gives the same gradients as without, for every
adapter method: the recompute must see the same adapter tensors and save the same things."""
from __future__ import annotations

import pytest
import torch

from rwkvft.adapters import inject, parse_peft
from rwkvft.training.loss import masked_lm_loss


@pytest.fixture(scope="module")
def tiny_sd():
    from rwkvft.models.init import new_config, random_state_dict
    return random_state_dict(new_config(2, 128, 256), seed=2)


def _grads(sd, method, pc, grad_cp: bool):
    from rwkvft.models import model_from_state_dict
    torch.manual_seed(0)            # LoRA's A init and PiSSA's randomized SVD draw from it
    model = model_from_state_dict(sd).train()
    model.set_runtime(op="chunked", grad_cp=grad_cp)
    names = inject(model, parse_peft(method, pc), ["ln"])
    params = dict(model.named_parameters())
    with torch.no_grad():           # move every adapter off its identity init
        for n in names:
            params[n].add_(0.01 * torch.randn_like(params[n]))
    idx = torch.randint(0, 256, (2, 21), generator=torch.Generator().manual_seed(3))
    h, _ = model.forward_features(idx[:, :-1])
    total, count = masked_lm_loss(model.head, h, idx[:, 1:], torch.ones(2, 20), chunk=16)
    (total / count).backward()
    return {n: params[n].grad.clone() for n in names}


@pytest.mark.parametrize("method,pc", [
    ("miss", {"r": 16}), ("miss", {"r": 16, "mode": "bat"}),
    ("miss", {"r": 16, "mode": "mini", "mini_r": 32}), ("lora", {"r": 4, "lora_alpha": 8}),
    ("pissa", {"r": 4}),
])
def test_grad_cp_gives_the_same_gradients(tiny_sd, method, pc):
    plain = _grads(tiny_sd, method, pc, grad_cp=False)
    ckpt = _grads(tiny_sd, method, pc, grad_cp=True)
    assert plain.keys() == ckpt.keys() and any(k.endswith(".weight") for k in plain)   # ln too
    for n in plain:
        assert plain[n].abs().sum() > 0 or n.endswith("lora_A"), n
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-5, atol=1e-7, msg=n)
