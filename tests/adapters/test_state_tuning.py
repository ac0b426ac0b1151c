"""--peft state: initial-state gradients (kernels, model), injection, training, config."""
from __future__ import annotations

import hashlib
import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F

from rwkvft.adapters import inject, parse_peft
from rwkvft.cli import main
from rwkvft.errors import UserError
from rwkvft.kernels.chunked import wkv6_chunked, wkv7_chunked
from rwkvft.kernels.reference import wkv6_reference, wkv7_reference
from rwkvft.models import model_from_state_dict
from rwkvft.models.init import new_config, random_state_dict


def _wkv7_inputs(B=2, T=19, H=2, N=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    r, k, v = rnd(B, T, H, N), rnd(B, T, H, N), rnd(B, T, H, N)
    log_w = -0.6065 * torch.sigmoid(rnd(B, T, H, N))
    kk = F.normalize(rnd(B, T, H, N), dim=-1)
    eta = torch.sigmoid(rnd(B, T, H, N))
    return [r, log_w, k, v, -kk, kk * eta]


def _wkv6_inputs(B=2, T=19, H=2, N=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    r, k, v = rnd(B, T, H, N), rnd(B, T, H, N), rnd(B, T, H, N)
    log_w = -torch.exp(rnd(B, T, H, N) - 1)
    return [r, log_w, k, v, rnd(H, N) * 0.5]


def _grads(fn, inputs, s0, seed=1):
    inputs = [x.clone().requires_grad_(True) for x in inputs]
    s0 = s0.clone().requires_grad_(True)
    y, sT = fn(*inputs, state=s0)
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum() \
        + (sT * torch.randn(sT.shape, generator=g, dtype=sT.dtype)).sum()
    loss.backward()
    return s0.grad, [x.grad for x in inputs]


@pytest.mark.parametrize("kind", ["wkv7", "wkv6"])
def test_initial_state_gradient_chunked_matches_reference_fp64(kind):
    inputs = _wkv7_inputs() if kind == "wkv7" else _wkv6_inputs()
    chunked, ref = (wkv7_chunked, wkv7_reference) if kind == "wkv7" else (wkv6_chunked, wkv6_reference)
    s0 = torch.randn(2, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ds_c, dx_c = _grads(chunked, inputs, s0)
    ds_r, dx_r = _grads(ref, inputs, s0)
    assert ds_r.abs().max() > 1e-2          # the state really matters to the loss
    assert torch.allclose(ds_c, ds_r, rtol=1e-9, atol=1e-10)
    for a, b in zip(dx_c, dx_r):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("kind", ["wkv7", "wkv6"])
def test_reference_initial_state_gradient_matches_finite_differences(kind):
    """The oracle itself: torch.autograd.gradcheck on the state input (fp64)."""
    inputs = _wkv7_inputs(B=1, T=5, H=1, N=4) if kind == "wkv7" else _wkv6_inputs(B=1, T=5, H=1, N=4)
    fn = wkv7_reference if kind == "wkv7" else wkv6_reference
    s0 = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: fn(*inputs, state=s), (s0,))


def _tiny(version, seed=0):
    cfg = new_config(2, 32, 61, head_size=16, version=version)
    return model_from_state_dict(random_state_dict(cfg, seed=seed), dtype=torch.float64)


@pytest.mark.parametrize("version", ["x070", "x060", "x052"])
def test_model_time_state_gradient_matches_finite_differences(version, monkeypatch):
    # The model keeps decays and GroupNorm in fp32 (.float()); let float64 stay float64 so the
    # finite differences are not drowned in fp32 rounding. The maths is unchanged.
    to32 = torch.Tensor.float
    monkeypatch.setattr(torch.Tensor, "float",
                        lambda t: t if t.dtype == torch.float64 else to32(t))
    model = _tiny(version)
    names = inject(model, parse_peft("state", {}), [])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n in names:
            model.get_parameter(n).copy_(torch.randn(model.get_parameter(n).shape, generator=g) * 0.5)
    model.set_runtime(op="chunked")
    idx = torch.randint(0, 61, (2, 11), generator=g)
    tgt = torch.randint(0, 61, (2, 11), generator=g)

    def loss():
        return F.cross_entropy(model(idx).reshape(-1, 61), tgt.reshape(-1))

    model.zero_grad()
    loss().backward()
    for n in names:
        p = model.get_parameter(n)
        d = torch.randn(p.shape, generator=g, dtype=p.dtype)
        analytic = float((p.grad * d).sum())
        eps = 1e-3  # truncation ~eps^2; smaller eps meets rounding in the fp64 model
        with torch.no_grad():
            p.add_(eps * d)
            up = float(loss())
            p.sub_(2 * eps * d)
            down = float(loss())
            p.add_(eps * d)
        numeric = (up - down) / (2 * eps)
        assert abs(analytic) > 1e-4, n
        assert abs(numeric - analytic) <= 1e-4 * abs(analytic), (n, numeric, analytic)


@pytest.mark.parametrize("version", ["x070", "x060"])
def test_time_state_is_the_initial_state_and_a_passed_state_wins(version):
    model = _tiny(version).float()
    base_out = model(torch.tensor([[3, 5, 7, 9, 11, 2]]))
    names = inject(model, parse_peft("state", {}), [])
    idx = torch.tensor([[3, 5, 7, 9, 11, 2]])
    assert torch.equal(model(idx), base_out)               # zero init = the base model
    with torch.no_grad():
        for n in names:
            model.get_parameter(n).normal_()
    ts = [b.att.time_state.detach() for b in model.blocks]
    state = [(torch.zeros(2, 32), s.expand(2, -1, -1, -1), torch.zeros(2, 32)) for s in ts]
    idx2 = idx.repeat(2, 1)
    assert torch.allclose(model(idx2), model(idx2, state), atol=0, rtol=0)
    zeros = model.init_state(2)
    assert torch.allclose(model(idx2, zeros), base_out.repeat(2, 1, 1), atol=1e-6)


def test_inject_trains_only_time_state_and_train_parts():
    model = _tiny("x070").float()
    names = inject(model, parse_peft("state", '{"init":"zero"}'), ["ln"])
    assert {n for n in names if n.endswith("time_state")} == {"blocks.0.att.time_state",
                                                              "blocks.1.att.time_state"}
    assert all(n.endswith("time_state") or ".ln" in n or n.startswith("ln_out") for n in names)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(names)
    assert model.blocks[0].att.time_state.dtype == torch.float32
    assert model.blocks[0].att.time_state.shape == (2, 16, 16)
    with pytest.raises(UserError, match="already has a state"):
        inject(model, parse_peft("state", {}), [])
    # --train_parts time on RWKV-6 does not swallow time_state into "time"
    m6 = _tiny("x060").float()
    from rwkvft.adapters.inject import param_kind
    n6 = inject(m6, parse_peft("state", {}), ["time"])
    assert param_kind("blocks.0.att.time_state") == "state"
    assert param_kind("blocks.0.att.time_decay") == "time"
    assert "blocks.0.att.time_decay" in n6


def test_init_base_is_the_state_after_the_prompt():
    model = _tiny("x060").float()
    prompt = [4, 8, 15, 16, 23, 42]
    with torch.no_grad():
        _, state = model.forward_features(torch.tensor([prompt]))
    inject(model, parse_peft("state", {"init": "base", "prompt_tokens": prompt}), [])
    for i, b in enumerate(model.blocks):
        assert torch.equal(b.att.time_state.detach(), state[i][1][0])


@pytest.mark.parametrize("conf,msg", [
    ('{"r": 8}', "unknown key 'r' for state"),
    ('{"init": "random"}', "init must be"),
    ('{"init": "base"}', "needs a \"prompt\""),
    ('{"prompt_tokens": [1, 2]}', "only used with init"),
    ('{"init": "base", "prompt_tokens": []}', "non-empty list"),
])
def test_bad_state_config(conf, msg):
    with pytest.raises(UserError, match=msg):
        parse_peft("state", conf)


def test_default_lr_for_state_and_explicit_lr_kept():
    import argparse

    from rwkvft.adapters.state import DEFAULT_LR
    from rwkvft.config import add_train_arguments, resolve_config
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    base = ["--load_model", "m.pth", "--data_file", "d.npy"]
    assert resolve_config(p.parse_args(base + ["--peft", "state"])).lr_init == DEFAULT_LR
    assert resolve_config(p.parse_args(base + ["--peft", "state", "--lr_init", "3e-4"])).lr_init == 3e-4
    assert resolve_config(p.parse_args(base)).lr_init == 2e-5


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _flags(model, proj, data, **over):
    flags = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "numpy",
             "ctx_len": 32, "micro_bsz": 4, "epoch_steps": 4, "epoch_count": 3,
             "accelerator": "cpu", "precision": "fp32", "peft": "state", "progress": "0",
             "op": "chunked"}
    flags.update(over)
    return ["train"] + [a for k, v in flags.items() for a in (f"--{k}", str(v))]


def test_state_tuning_lowers_loss_and_keeps_the_base(small_model, tokens_npy, tmp_path):
    before = _sha(small_model)
    proj = tmp_path / "run"
    assert main(_flags(small_model, proj, tokens_npy, grad_cp=1, lr_init=0.1)) == 0
    losses = [json.loads(l)["loss"] for l in (proj / "loss.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2
    sd = torch.load(proj / "rwkv-2.pth", weights_only=True)
    assert set(sd) == {"blocks.0.att.time_state", "blocks.1.att.time_state"}
    assert sd["blocks.0.att.time_state"].dtype == torch.float32
    assert sd["blocks.0.att.time_state"].abs().max() > 0
    config = json.loads((proj / "adapter_config.json").read_text())
    assert config["method"] == "state" and config["init"] == "zero"
    assert _sha(small_model) == before
    log = (proj / "train_log.txt").read_text()
    assert "state      2 tensors" in log


def test_state_with_train_parts_saves_both(small_model, tokens_npy, tmp_path):
    proj = tmp_path / "run"
    assert main(_flags(small_model, proj, tokens_npy, epoch_count=1, epoch_steps=2,
                       train_parts="ln")) == 0
    sd = torch.load(proj / "rwkv-0.pth", weights_only=True)
    assert {k for k in sd if k.endswith("time_state")} == {"blocks.0.att.time_state",
                                                          "blocks.1.att.time_state"}
    assert "ln_out.weight" in sd and "blocks.0.ln1.weight" in sd
    assert not any(k.endswith((".miss", ".lora_A")) for k in sd)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                    reason="the quant extra (bitsandbytes) is not installed")
def test_state_tuning_on_an_int8_base():
    from rwkvft.adapters.quant import QuantizedBase, quantize_base
    model = _tiny("x070").float()
    idx = torch.randint(0, 61, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(idx)
    names = inject(model, parse_peft("state", {}), [])
    q = quantize_base(model, "int8")
    assert q["layers"] == 12 and isinstance(model.blocks[0].att.key, QuantizedBase)
    assert "blocks.0.att.key.weight" not in model.state_dict()
    with torch.no_grad():
        assert float((model(idx) - ref).abs().max()) < 0.05 * float(ref.abs().max())
    params = [model.get_parameter(n) for n in names]
    opt = torch.optim.AdamW(params, lr=0.05)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == names


def test_merge_output_of_an_rwkv7_state_run_is_refused_before_training(small_model, tokens_npy,
                                                                        tmp_path, capsys):
    proj = tmp_path / "run"
    rc = main(_flags(small_model, proj, tokens_npy, merge_output=tmp_path / "merged.pth"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "runner-state" in err[-1]
    assert not (proj / "loss.jsonl").exists() and not (tmp_path / "merged.pth").exists()
