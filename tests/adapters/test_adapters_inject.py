"""Injection by name, the trainable set, adapter state files, config validation."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from rwkvft.adapters import (adapter_state_dict, format_trainable, inject, load_adapter_state,
                             parse_peft, trainable_summary)
from rwkvft.adapters.inject import V6_TARGETS, V7_TARGETS
from rwkvft.formats import (check_fingerprint, fingerprint, read_adapter,
                                          save_adapter)
from rwkvft.errors import UserError
from rwkvft.models import build_model
from rwkvft.models.init import init_state_dict, new_config, perturb_state_dict


def tiny_sd(seed=0):
    cfg = new_config(n_layer=2, n_embd=64, vocab_size=97, head_size=16)
    return cfg, perturb_state_dict(init_state_dict(cfg, seed), seed=seed + 1)


def tiny_model(seed=0):
    cfg, sd = tiny_sd(seed)
    model = build_model(cfg)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.eval(), sd


IDX = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79], [2, 71, 82, 81, 82, 84, 59, 0]])


class _V6Block(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.att, self.ffn = nn.Module(), nn.Module()
        for n in ("receptance", "key", "value", "gate", "output"):
            setattr(self.att, n, nn.Linear(C, C, bias=False))
        self.att.time_maa_x = nn.Parameter(torch.zeros(1, 1, C))
        self.att.time_faaaa = nn.Parameter(torch.zeros(2, C // 2))
        self.ffn.key = nn.Linear(C, 2 * C, bias=False)
        self.ffn.receptance = nn.Linear(C, C, bias=False)
        self.ffn.value = nn.Linear(2 * C, C, bias=False)
        self.ln1 = nn.LayerNorm(C)


class _V6Model(nn.Module):
    """Only the names matter here: an RWKV-6-shaped module tree."""
    def __init__(self, C=16, L=2):
        super().__init__()
        self.config = type("Cfg", (), {"version": "x060"})()
        self.emb = nn.Embedding(10, C)
        self.blocks = nn.ModuleList(_V6Block(C) for _ in range(L))
        self.head = nn.Linear(C, 10, bias=False)


def _wrapped(model):
    return sorted(n for n, m in model.named_modules() if hasattr(m, "adapter_param_names"))


# ---------------------------------------------------------------- targets and trainable set
def test_default_targets_rwkv7_and_rwkv6():
    model, _ = tiny_model()
    names = inject(model, parse_peft("miss", '{"r": 8}'))
    assert _wrapped(model) == sorted(f"blocks.{l}.{t}" for l in range(2) for t in V7_TARGETS)
    assert names == sorted(f"blocks.{l}.{t}.miss" for l in range(2) for t in V7_TARGETS)
    assert names.config.targets == sorted(V7_TARGETS)
    cfg = parse_peft("lora", '{"r": 2}')
    model, _ = tiny_model()
    inject(model, cfg, ["ln"])
    assert (cfg.targets, cfg.train_parts) == (sorted(V7_TARGETS), ["ln"])   # resolved in place
    v6 = _V6Model()
    inject(v6, parse_peft("lora", '{"r": 2}'))
    assert _wrapped(v6) == sorted(f"blocks.{l}.{t}" for l in range(2) for t in V6_TARGETS)
    assert "blocks.0.att.gate" in _wrapped(v6)


def test_target_modules_override_and_unknown_target():
    model, _ = tiny_model()
    inject(model, parse_peft("miss", {"r": 8, "target_modules": ["att.key", "ffn.value"]}))
    assert _wrapped(model) == ["blocks.0.att.key", "blocks.0.ffn.value",
                               "blocks.1.att.key", "blocks.1.ffn.value"]
    model, _ = tiny_model()
    with pytest.raises(UserError, match=r"target module 'att.query' matches no adaptable Linear.*"
                                        r"valid names: att.key, att.output"):
        inject(model, parse_peft("miss", {"r": 8, "target_modules": ["att.query"]}))
    with pytest.raises(UserError, match=r"train_parts \[\"head\"\]"):
        inject(model, parse_peft("lora", {"target_modules": ["head"]}))


def test_miss_r64_parameter_count_on_01b_shape():
    """9 * r * C per RWKV-7 block (spec miss.md §7); counted on meta tensors (no memory)."""
    with torch.device("meta"):
        model = build_model(new_config(n_layer=12, n_embd=768))
    names = inject(model, parse_peft("miss", '{"r": 64}'))
    params = dict(model.named_parameters())
    assert sum(params[n].numel() for n in names) == 12 * 9 * 64 * 768 == 5_308_416
    assert trainable_summary(model, names) == {"miss": (72, 5_308_416)}
    assert "miss      72 tensors      5,308,416 params" in format_trainable(model, names)
    assert "    blocks.11.ffn.value.miss (64, 768)" in format_trainable(model, names, list_names=True)


def test_train_parts_select_the_right_tensors():
    model, _ = tiny_model()
    names = set(inject(model, parse_peft("miss", '{"r": 8}'), ["ln", "time", "emb", "head"]))
    for n in ("blocks.0.ln0.weight", "blocks.1.ln2.bias", "blocks.0.att.ln_x.weight", "ln_out.bias",
              "blocks.0.att.x_r", "blocks.1.att.w1", "blocks.1.att.v2", "blocks.0.att.r_k",
              "blocks.0.att.k_a", "blocks.1.ffn.x_k", "emb.weight", "head.weight"):
        assert n in names, n
    assert "blocks.0.att.key.weight" not in names
    summary = trainable_summary(model, sorted(names))
    assert set(summary) == {"miss", "ln", "time", "emb", "head"}
    assert summary["ln"][0] == 2 + 2 * 6 + 2   # ln0, 2 x (ln1, ln2, ln_x) x (w, b), ln_out
    for n, p in model.named_parameters():
        assert p.requires_grad == (n in names)


def test_train_parts_errors():
    model, _ = tiny_model()
    with pytest.raises(UserError, match="unknown train part 'att'; use any of ln, time, emb, head"):
        inject(model, parse_peft("miss", '{"r": 8}'), ["att"])
    v6 = _V6Model()
    names = inject(v6, parse_peft("miss", '{"r": 4}'), ["time"])
    assert "blocks.0.att.time_maa_x" in names and "blocks.1.att.time_faaaa" in names


def test_inject_twice_is_refused():
    model, _ = tiny_model()
    inject(model, parse_peft("miss", '{"r": 8}'))
    with pytest.raises(UserError, match="already has adapters"):
        inject(model, parse_peft("miss", '{"r": 8}'))


@pytest.mark.parametrize("method,conf,msg", [
    ("miss", {"r": 128}, r"MiSS r=128 is larger than in_features=64 of blocks.0.att.receptance"),
    ("miss", {"r": 24, "mode": "bat"}, r"MiSS bat needs in and out features divisible by r, but "
                                       r"blocks.0.att.receptance is \(64 out, 64 in\) and r=24"),
    ("miss", {"r": 8, "mode": "mini", "mini_r": 48},
     r"MiSS mini needs out_features divisible by mini_r, but blocks.0.att.receptance"),
    ("pissa", {"r": 65}, r"PiSSA r=65 exceeds min\(out, in\)=64 of blocks.0.att.receptance"),
])
def test_size_errors_name_the_layer(method, conf, msg):
    model, _ = tiny_model()
    with pytest.raises(UserError, match=msg):
        inject(model, parse_peft(method, conf))


# ---------------------------------------------------------------- behaviour on the model
METHODS = [("miss", {"r": 8}), ("miss", {"r": 16, "mode": "bat"}), ("miss", {"r": 8, "mode": "bat_in"}),
           ("miss", {"r": 12, "mode": "mini", "mini_r": 16}), ("miss", {"r": 8, "dropout": 0.1}),
           ("lora", {"r": 4, "lora_alpha": 8, "lora_dropout": 0.05}), ("pissa", {"r": 4})]


@pytest.mark.parametrize("method,conf", METHODS, ids=lambda v: str(v))
def test_training_changes_only_the_trainable_set(method, conf):
    torch.manual_seed(0)
    model, base_sd = tiny_model()
    base_logits = model(IDX).detach()
    names = inject(model, parse_peft(method, conf), ["ln"])
    tol = 1e-4 if method == "pissa" else 1e-6
    torch.testing.assert_close(model(IDX), base_logits, atol=tol, rtol=tol)
    # a base checkpoint still loads strictly into the injected model (PiSSA aside: its
    # frozen base is the residual by design)
    if method != "pissa":
        model.load_state_dict({k: v.float() for k, v in base_sd.items()}, strict=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(IDX).flatten(0, 1), IDX.roll(-1, 1).flatten()).backward()
        opt.step()
    model.eval()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(names)          # frozen base bit-identical, every trainable moved
    assert (model(IDX) - base_logits).abs().max() > 1e-3


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("method,conf", [("miss", {"r": 8}), ("pissa", {"r": 4, "svd_niter": 2})])
def test_adapter_file_round_trip(tmp_path, suffix, method, conf):
    torch.manual_seed(0)
    model, base_sd = tiny_model()
    names = inject(model, parse_peft(method, conf), ["ln"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    want = model(IDX).detach()
    sd = adapter_state_dict(model, names)
    path = save_adapter(tmp_path / f"rwkv-1{suffix}", sd, names.config, fingerprint(base_sd))
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["method"] == method and cfg["train_parts"] == ["ln"] and cfg["r"] == conf["r"]
    assert cfg["base"]["n_layer"] == 2 and cfg["base"]["n_embd"] == 64 and cfg["base"]["version"] == "x070"
    sd2, cfg2 = read_adapter(path)
    assert set(sd2) == set(sd) and set(names) <= set(sd2)
    if method == "pissa":
        assert "blocks.0.att.key.lora_A0" in sd2 and "blocks.0.att.key.lora_B0" in sd2
    torch.manual_seed(123)     # a different randomized-SVD draw for PiSSA's fresh init
    fresh, _ = tiny_model()
    inject(fresh, parse_peft(cfg2["method"], conf), cfg2["train_parts"])
    load_adapter_state(fresh, sd2)
    torch.testing.assert_close(fresh(IDX), want, atol=1e-4, rtol=1e-4)
    check_fingerprint(cfg2["base"], base_sd)


def test_load_adapter_state_errors():
    model, _ = tiny_model()
    names = inject(model, parse_peft("miss", '{"r": 8}'))
    sd = adapter_state_dict(model, names)
    bad = dict(sd, **{"blocks.0.att.key.miss": torch.zeros(8, 32)})
    with pytest.raises(UserError, match=r"adapter tensor blocks.0.att.key.miss has shape \(8, 32\) but "
                                        r"the model expects \(8, 64\)"):
        load_adapter_state(model, bad)
    with pytest.raises(UserError, match=r"adapter file lacks blocks.0.att.key.miss \(1 missing\)"):
        load_adapter_state(model, {k: v for k, v in sd.items() if k != "blocks.0.att.key.miss"})
    with pytest.raises(UserError, match=r"adapter tensor blocks.0.ln1.weight has no place in this model"):
        load_adapter_state(model, dict(sd, **{"blocks.0.ln1.weight": torch.ones(64)}))


def test_fingerprint_mismatch_is_refused():
    _, sd = tiny_sd(0)
    _, other = tiny_sd(5)
    check_fingerprint(fingerprint(sd), {k: v.float() for k, v in sd.items()})  # fp32 copy: same base
    with pytest.raises(UserError, match=r"trained on a different base model \(checksum"):
        check_fingerprint(fingerprint(sd), other)


# ---------------------------------------------------------------- parse_peft
def test_parse_peft_defaults_and_aliases():
    c = parse_peft("miss", "")
    assert (c.method, c.r, c.mode, c.dropout) == ("miss", 64, "default", 0.0)
    assert parse_peft("disha", '{"r": 8, "mode": "bone"}').mode == "default"
    assert parse_peft("miss", '{"init_weights": "bat", "r": 4}').mode == "bat"
    c = parse_peft("miss", '{"mode": "mini", "mini_r": 8, "miss_dropout": 0.01}')
    assert (c.mini_r, c.dropout) == (8, 0.01)
    c = parse_peft("lora", '{"r":8,"lora_alpha":32,"lora_dropout":0.05}')
    assert (c.r, c.alpha, c.dropout, c.scale) == (8, 32.0, 0.05, 4.0)
    c = parse_peft("pissa", '{"r": 16, "svd_niter": 2}')
    assert (c.r, c.svd_niter, c.scale) == (16, 2, 1.0)


@pytest.mark.parametrize("method,conf,msg", [
    ("miss", '{"r": 8,', r"--peft_config is not valid JSON \(Expecting"),
    ("miss", "[8]", r"--peft_config must be a JSON object"),
    ("miss", '{"rank": 8}', r"unknown key 'rank' for miss \(did you mean 'r'\?\); accepted keys: dropout, init_weights"),
    ("lora", '{"r": 8, "mode": "bat"}', r"unknown key 'mode' for lora"),
    ("miss", '{"r": 0}', r"r must be an integer >= 1, got 0"),
    ("miss", '{"r": -4}', r"r must be an integer >= 1, got -4"),
    ("miss", '{"r": 8.5}', r"r must be an integer >= 1, got 8.5"),
    ("miss", '{"mode": "diag"}', r"unknown MiSS mode 'diag'; use one of default, bat, bat_in, mini"),
    ("miss", '{"mini_r": 4}', r"mini_r is only used with \"mode\": \"mini\""),
    ("miss", '{"dropout": 1.5}', r"dropout must be a number in \[0.0, 1.0\), got 1.5"),
    ("lora", '{"lora_alpha": 0}', r"lora_alpha must be a number"),
    ("lora", '{"lora_dropout": 0.1, "dropout": 0.2}', r"give only one of lora_dropout / dropout"),
    ("pissa", '{"lora_alpha": 16}', r"unknown key 'lora_alpha' for pissa"),
    ("pissa", '{"svd_niter": -1}', r"svd_niter must be an integer >= 0"),
    ("miss", '{"init_weights": false}', r"init_weights must be true, \"bat\" or \"mini\""),
    ("miss", '{"target_modules": []}', r"target_modules must be a list of module names"),
    ("dora", "{}", r"unknown --peft method 'dora'; use one of miss, lora, pissa"),
])
def test_parse_peft_errors(method, conf, msg):
    with pytest.raises(UserError, match=msg):
        parse_peft(method, conf)
