"""Adapters whose parameters are not fp32 (DeepSpeed's bf16 engine casts every float parameter,
adapters included, to bf16 and keeps the fp32 masters in its optimizer): the forward must run
and keep the adapter maths in fp32, on the bf16 values (issue 24, D1)."""
from __future__ import annotations

import copy

import pytest
import torch

from rwkvft.adapters import inject, parse_peft
from rwkvft.models import build_model
from rwkvft.models.init import init_state_dict, new_config, perturb_state_dict

IDX = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79], [2, 71, 82, 81, 82, 84, 59, 0]])
CASES = [("miss", '{"r":16}'), ("miss", '{"r":16,"mode":"bat"}'), ("lora", '{"r":8}'),
         ("pissa", '{"r":8}')]


def _adapted(method, config):
    cfg = new_config(n_layer=2, n_embd=64, vocab_size=97, head_size=16)
    model = build_model(cfg)
    model.load_state_dict({k: v.float() for k, v in
                           perturb_state_dict(init_state_dict(cfg, 0), seed=1).items()})
    trainable = inject(model, parse_peft(method, config), [])
    gen = torch.Generator().manual_seed(0)
    params = dict(model.named_parameters())
    with torch.no_grad():  # a trained-looking adapter, not the zero/identity init
        for n in trainable:
            params[n].add_(0.05 * torch.randn(params[n].shape, generator=gen))
    return model, list(trainable)


@pytest.mark.parametrize("method,config", CASES, ids=[f"{m}{c}" for m, c in CASES])
def test_adapters_run_with_bf16_parameters_and_compute_in_fp32(method, config):
    model, trainable = _adapted(method, config)
    # what DeepSpeed's bf16 engine does: every float parameter to bf16 (buffers untouched)
    ds = copy.deepcopy(model)
    for p in ds.parameters():
        p.data = p.data.to(torch.bfloat16)
    # the reference: the same bf16 values, adapters held in fp32 (the project's normal layout)
    ref = copy.deepcopy(ds)
    for n, p in ref.named_parameters():
        if n in trainable:
            p.data = p.data.float()
    outs, grads = [], []
    for m in (ds, ref):
        logits = m(IDX)
        logits.float().square().mean().backward()
        outs.append(logits.float())
        ps = dict(m.named_parameters())
        grads.append({n: ps[n].grad.float() for n in trainable})
    assert ds.blocks[0].att.key.weight.dtype == torch.bfloat16
    assert torch.isfinite(outs[0]).all()
    # same values, adapter maths in fp32 both times: only the final bf16 casts may differ
    assert torch.allclose(outs[0], outs[1], rtol=1e-2, atol=1e-2)
    for n in trainable:  # the bf16 parameter's gradient is the fp32 gradient rounded to bf16
        scale = float(grads[1][n].abs().max())
        assert scale > 0, n
        assert float((grads[0][n] - grads[1][n]).abs().max()) <= 1e-2 * scale, n
