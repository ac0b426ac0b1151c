"""--quant int8|nf4 on CPU (bitsandbytes' CPU backend): quantized layers against the float
base, training on a quantized base, the state dict, the train CLI, and the missing-extra error."""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rwkvft.adapters import inject, parse_peft
from rwkvft.adapters.base import AdaptedLinear
from rwkvft.adapters.miss import MissLinear
from rwkvft.adapters.quant import QuantizedBase, quantize_base
from rwkvft.cli import main
from rwkvft.errors import UserError

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
needs_bnb = pytest.mark.skipif(not HAS_BNB, reason="the quant extra (bitsandbytes) is not installed")

# relative Frobenius error of a Gaussian weight: nf4 (4 bit, blocks of 64) ~0.09, int8 blockwise ~0.011
WEIGHT_ERR = {"nf4": 0.12, "int8": 0.02}


def _layer(seed=0, out_f=96, in_f=128):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out_f, in_f, generator=g) / in_f ** 0.5)
    return lin


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@needs_bnb
@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_quantized_layer_is_close_to_the_float_layer_and_saves_memory(mode):
    lin = _layer()
    w = lin.weight.detach().clone()
    m = MissLinear(lin, r=8)
    model = nn.Sequential(m)
    info = quantize_base(model, mode)
    q = model[0]
    assert isinstance(q, QuantizedBase) and isinstance(q, MissLinear)
    assert "weight" not in dict(q.named_parameters()) and q.qweight.dtype == torch.uint8
    assert info["layers"] == 1 and info["float_bytes"] == w.numel() * 4
    assert info["quant_bytes"] < {"nf4": 0.16, "int8": 0.27}[mode] * info["float_bytes"]
    assert _rel(q.dequantized_weight(), w) < WEIGHT_ERR[mode]

    x = torch.randn(5, 7, 128, requires_grad=True)
    y = q(x)
    assert _rel(y.detach(), F.linear(x.detach(), w)) < WEIGHT_ERR[mode]
    # the input gradient is exactly g @ W_dequantized (MiSS D starts at zero, so the adapter
    # adds nothing to it yet)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    torch.testing.assert_close(x.grad, g @ q.dequantized_weight().float(), rtol=1e-5, atol=1e-5)
    assert q.miss.grad is not None and q.miss.dtype == torch.float32


@needs_bnb
def test_bf16_weights_and_autocast_dtypes():
    lin = _layer()
    lin.weight.data = lin.weight.data.to(torch.bfloat16)
    model = nn.Sequential(MissLinear(lin, r=8))
    quantize_base(model, "nf4")
    x = torch.randn(3, 128, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert model[0].dequantized_weight().dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and model[0].miss.grad.dtype == torch.float32


@pytest.fixture(scope="module")
def tiny_sd():
    from rwkvft.models.init import new_config, random_state_dict
    return random_state_dict(new_config(2, 128, 256), seed=1)


def _model(sd, method, pc):
    from rwkvft.models import model_from_state_dict
    model = model_from_state_dict(sd).train()
    model.set_runtime(op="chunked")
    names = inject(model, parse_peft(method, pc), [])
    return model, names


@needs_bnb
@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_miss_on_a_quantized_base_lowers_the_loss_and_keeps_the_base(tiny_sd, mode):
    torch.manual_seed(0)
    model, names = _model(tiny_sd, "miss", {"r": 16})
    quantize_base(model, mode)
    frozen = {n: b.clone() for n, b in model.named_buffers() if n.endswith("qweight")}
    assert len(frozen) == 12
    params = dict(model.named_parameters())
    assert all(params[n].dtype == torch.float32 and params[n].requires_grad for n in names)
    assert not any(p.requires_grad for n, p in params.items() if n not in names)
    opt = torch.optim.AdamW([params[n] for n in names], lr=3e-3)
    idx = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(idx[:, :-1]).reshape(-1, 256), idx[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    for n, b in model.named_buffers():
        if n in frozen:
            assert torch.equal(b, frozen[n]), n


@needs_bnb
@pytest.mark.parametrize("method,pc", [("miss", {"r": 16, "mode": "mini", "mini_r": 32}),
                                       ("miss", {"r": 16, "mode": "bat"}), ("lora", {"r": 4}),
                                       ("pissa", {"r": 4})])
def test_every_method_runs_on_an_int8_base(tiny_sd, method, pc):
    """Same outputs as the float model up to int8 error, gradients for every adapter tensor.
    bat rebuilds W' from the dequantized weight; PiSSA quantizes its residual W - B0 A0."""
    model, names = _model(tiny_sd, method, pc)
    idx = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(idx)
    quantize_base(model, "int8")
    out = model(idx)
    assert _rel(out.detach(), ref) < 0.05
    out.float().pow(2).mean().backward()
    params = dict(model.named_parameters())
    assert all(params[n].grad is not None for n in names)
    # every layer learns (LoRA's A has zero gradient while B is still zero, so look at each layer)
    for prefix in {n.rpartition(".")[0] for n in names}:
        assert sum(params[n].grad.abs().sum() for n in names if n.startswith(prefix + ".")) > 0, prefix


@needs_bnb
def test_state_dict_drops_quantized_weights_and_a_base_load_requantizes(tiny_sd):
    model, _ = _model(tiny_sd, "miss", {"r": 16})
    quantize_base(model, "int8")
    keys = set(model.state_dict())
    assert "blocks.0.att.key.weight" not in keys and "blocks.0.att.key.miss" in keys
    assert "blocks.0.att.w1" in keys and "head.weight" in keys        # unadapted weights stay
    new = {k: v.float() * (2.0 if k == "blocks.1.ffn.value.weight" else 1.0) for k, v in tiny_sd.items()}
    from rwkvft.models import to_module_shapes
    model.load_state_dict(to_module_shapes(new, model.config), strict=True)
    layer = model.get_submodule("blocks.1.ffn.value")
    assert _rel(layer.dequantized_weight(), new["blocks.1.ffn.value.weight"]) < WEIGHT_ERR["int8"]


@needs_bnb
def test_quantize_needs_adapters_and_a_known_mode(tiny_sd):
    from rwkvft.models import model_from_state_dict
    with pytest.raises(UserError, match="inject an adapter first"):
        quantize_base(model_from_state_dict(tiny_sd), "nf4")
    model, _ = _model(tiny_sd, "lora", {"r": 4})
    with pytest.raises(UserError, match="--quant 'int4'"):
        quantize_base(model, "int4")
    assert quantize_base(model, "none")["layers"] == 0
    quantize_base(model, "nf4")
    with pytest.raises(UserError, match="already quantized"):
        quantize_base(model, "nf4")


def test_missing_bitsandbytes_names_the_extra(tiny_sd, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    model, _ = _model(tiny_sd, "miss", {"r": 16})
    with pytest.raises(UserError, match=r"pip install 'rwkvft\[quant\]'") as e:
        quantize_base(model, "nf4")
    assert "\n" not in str(e.value)
    assert all(isinstance(m, AdaptedLinear) and not isinstance(m, QuantizedBase)
               for m in model.modules() if isinstance(m, AdaptedLinear))


@needs_bnb
def test_train_cli_with_quant_int8(make_checkpoint, tmp_path, capsys):
    model = make_checkpoint(n_layer=2, n_embd=128, vocab_size=256, seed=5)
    data = tmp_path / "tokens.npy"
    np.save(data, np.tile(np.random.default_rng(0).integers(1, 256, size=97), 10).astype(np.int64))
    proj = tmp_path / "run"
    flags = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "numpy",
             "ctx_len": 32, "micro_bsz": 2, "epoch_steps": 4, "epoch_count": 1, "lr_init": 1e-2,
             "accelerator": "cpu", "precision": "fp32", "peft": "miss", "peft_config": '{"r":16}',
             "quant": "int8", "progress": 0}
    assert main(["train", *[x for k, v in flags.items() for x in (f"--{k}", str(v))]]) == 0
    log = (proj / "train_log.txt").read_text()
    assert "quant: int8 base weights in 12 adapted layers" in log
    saved = torch.load(next(proj.glob("rwkv-*.pth")), weights_only=True)
    assert saved and all(k.endswith(".miss") for k in saved) and all(v.abs().sum() > 0 for v in saved.values())
    assert json.loads((proj / "train_config.json").read_text())["quant"] == "int8"
    assert main(["train", "--load_model", str(model), "--data_file", str(data),
                 "--quant", "int4", "--proj_dir", str(tmp_path / "bad")]) == 2
    assert "--quant 'int4' is not one of none, int8, nf4" in capsys.readouterr().err
