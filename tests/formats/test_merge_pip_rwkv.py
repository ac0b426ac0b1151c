"""A merged .pth loads in the `rwkv` pip package (the oracle) and gives our adapted model's logits."""
from __future__ import annotations

import importlib
import os

import pytest
import torch

from rwkvft.adapters import adapter_state_dict, inject, parse_peft
from rwkvft.formats import fingerprint, load_model, read_state_dict, save_adapter, write_state_dict
from rwkvft.cli import main
from rwkvft.models import build_model
from rwkvft.models.init import init_state_dict, new_config, perturb_state_dict

TOKENS = [5, 17, 33, 2, 91, 64, 8, 40, 11, 0, 96]


@pytest.fixture(scope="module")
def pip_rwkv():
    pytest.importorskip("rwkv")
    os.environ["RWKV_V7_ON"] = "1"          # the pip package reads it at import time
    import rwkv.model
    if not hasattr(rwkv.model, "RWKV_x070"):
        importlib.reload(rwkv.model)
    return rwkv.model.RWKV_x070


def _pip_logits(cls, path) -> torch.Tensor:
    model = cls(str(path)[:-len(".pth")], "cpu fp32")
    logits, _ = model.forward(TOKENS, None, full_output=True)
    return logits.float()


# LoRA's maths is pinned against HF peft and the merge test; one pip load costs seconds.
@pytest.mark.parametrize("method,conf", [("miss", {"r": 8}), ("miss", {"r": 16, "mode": "bat"}),
                                         ("pissa", {"r": 4})], ids=["miss", "bat", "pissa"])
def test_merged_pth_in_pip_rwkv_matches_adapted_model(tmp_path, pip_rwkv, method, conf):
    cfg = new_config(n_layer=2, n_embd=64, vocab_size=97, head_size=16)
    base_path = tmp_path / "base.pth"
    write_state_dict(perturb_state_dict(init_state_dict(cfg, 0), seed=1), base_path)
    base = read_state_dict(base_path)
    model = load_model(base_path)
    torch.manual_seed(0)
    names = inject(model, parse_peft(method, conf), ["ln"])
    with torch.no_grad():
        for n in names:
            p = model.get_parameter(n)
            p.add_(torch.randn_like(p) * (0.02 if p.dim() == 3 else 0.05))
    want = model(torch.tensor([TOKENS]))[0].detach()
    save_adapter(tmp_path / "run" / "rwkv-1.pth", adapter_state_dict(model, names),
                 names.config, fingerprint(base))
    out = tmp_path / "merged.pth"
    assert main(["merge", "--base", str(base_path), "--adapter", str(tmp_path / "run" / "rwkv-1.pth"),
                 "--output", str(out), "--dtype", "fp32"]) == 0
    got = _pip_logits(pip_rwkv, out)
    assert (got - want).abs().max() <= 1e-3
    assert (want - model_logits_without_adapter(base)).abs().max() > 1e-2   # the adapter matters


def model_logits_without_adapter(base):
    cfg = new_config(n_layer=2, n_embd=64, vocab_size=97, head_size=16)
    model = build_model(cfg)
    model.load_state_dict({k: v.float() for k, v in base.items()})
    return model.eval()(torch.tensor([TOKENS]))[0].detach()


def test_default_bf16_merge_loads_in_pip_rwkv(tmp_path, pip_rwkv):
    """The default (bf16) output is a valid official file: pip logits == ours on that file."""
    cfg = new_config(n_layer=2, n_embd=64, vocab_size=97, head_size=16)
    base_path = tmp_path / "base.pth"
    write_state_dict(perturb_state_dict(init_state_dict(cfg, 0), seed=1), base_path)
    (tmp_path / "a").mkdir()
    torch.save({"blocks.1.att.value.disha": torch.randn(8, 64) * 0.05}, tmp_path / "a" / "rwkv-0.pth")
    out = tmp_path / "merged.pth"
    assert main(["merge", "--base", str(base_path), "--adapter", str(tmp_path / "a" / "rwkv-0.pth"),
                 "--output", str(out)]) == 0
    ours = load_model(out)(torch.tensor([TOKENS]))[0].detach()
    assert (_pip_logits(pip_rwkv, out) - ours).abs().max() <= 1e-3
