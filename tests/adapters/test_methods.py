"""Every PEFT method of the shared case table (method_cases.py) through the same checks:
injection, identity at init, HF peft parity, merge and unmerge, layer selection."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from method_cases import ADAPTER_CASES, CASES
from rwkvft.adapters import AdaptedLinear, adapter_state_dict, inject, parse_peft, registry
from rwkvft.formats import fingerprint, merge_state_dict, read_adapter, save_adapter, unmerge_state_dict
from rwkvft.errors import UserError
from rwkvft.models import build_model, model_from_state_dict
from rwkvft.models.init import init_state_dict, new_config, perturb_state_dict

IDX = torch.tensor([[5, 17, 33, 2, 91, 64, 8, 40, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9]])
V7 = ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")


def base(n_layer=2):
    cfg = new_config(n_layer=n_layer, n_embd=64, vocab_size=97, head_size=16)
    return cfg, perturb_state_dict(init_state_dict(cfg, 0), seed=1)


def model_of(cfg, sd):
    model = build_model(cfg)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.eval()


def trained(case, n_layer=2, extra=None, seed=0):
    """(base_sd, injected model with random trained values, Injected names)."""
    cfg, sd = base(n_layer)
    model = model_of(cfg, sd)
    torch.manual_seed(seed)
    names = inject(model, parse_peft(case.method, dict(case.peft_config, **(extra or {}))))
    with torch.no_grad():
        for n in names:
            p = model.get_parameter(n)
            p.add_(torch.randn_like(p) * (0.02 if p.dim() == 3 or not case.linear else 0.05))
    return sd, model, names


def saved_tensors(model, names):
    if names.method.full_model:
        return {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    return adapter_state_dict(model, names)


def _suffixes(case):
    return registry.get(case.method).suffixes


# ---------------------------------------------------------------- injection
@pytest.mark.parametrize("case", CASES, ids=str)
def test_injection_trains_exactly_the_method_tensors(case):
    cfg, sd = base()
    model = model_of(cfg, sd)
    names = inject(model, parse_peft(case.method, case.peft_config))
    assert names.method.name == case.method and names.config is not None
    assert list(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    if case.linear:
        wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, AdaptedLinear))
        assert wrapped == sorted(f"blocks.{l}.{t}" for l in range(2) for t in V7)
        trained_locals = {n.rpartition(".")[2] for n in names}
        assert trained_locals <= set(_suffixes(case))
        assert len(names) == len(wrapped) * len(trained_locals)
        assert names.config.targets == sorted(V7)
    elif case.kind == "state":   # one initial state per layer, nothing else
        assert list(names) == [f"blocks.{l}.att.time_state" for l in range(2)]
    else:  # full fine-tuning: everything the model uses
        assert set(names) == {n for n, _ in model.named_parameters()} - {
            "blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_identity_at_init(case):
    cfg, sd = base()
    model = model_of(cfg, sd)
    want = model(IDX).detach()
    torch.manual_seed(0)
    inject(model, parse_peft(case.method, case.peft_config))
    tol = 1e-4 if case.method == "pissa" else 1e-6     # PiSSA: W_res + B0 A0 rounds
    torch.testing.assert_close(model(IDX), want, atol=tol, rtol=tol)


# ---------------------------------------------------------------- HF peft parity
@pytest.mark.parametrize("case", [c for c in CASES if c.hf], ids=str)
def test_layer_matches_hf_peft(case):
    peft = pytest.importorskip("peft")
    _, model, _ = trained(case)
    ours = model.get_submodule("blocks.0.att.key")
    cls_name, kwargs, paths = case.hf
    lin = nn.Linear(ours.in_features, ours.out_features, bias=False)
    with torch.no_grad():
        lin.weight.copy_(ours.dequantized_weight())          # PiSSA: the residual base
    holder = nn.Sequential()
    holder.add_module("lin0", lin)
    hf = peft.get_peft_model(holder, getattr(peft, cls_name)(target_modules=["lin0"], **kwargs))
    hf_layer = hf.base_model.model.lin0
    with torch.no_grad():
        for local, path in paths.items():
            hf_layer.get_parameter(path).copy_(getattr(ours, local))
    x = torch.randn(3, 7, ours.in_features)
    torch.testing.assert_close(ours(x), hf_layer(x), atol=1e-5, rtol=1e-5)
    hf_layer.merge()
    torch.testing.assert_close(ours.merged_weight(), hf_layer.base_layer.weight.detach(),
                               atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- merge and unmerge
@pytest.mark.parametrize("case", CASES, ids=str)
def test_merge_equals_adapted_model_and_unmerge_restores(case):
    sd, model, names = trained(case)
    tensors, config = saved_tensors(model, names), names.config.to_dict()
    merged = merge_state_dict(sd, tensors, config)
    states = [k for k in merged if k.endswith(".att.time_state")]   # a state merges beside the base
    assert states == ([f"blocks.{l}.att.time_state" for l in range(2)] if case.kind == "state" else [])
    assert [k for k in merged if k not in states] == list(sd) and all(merged[k].shape == sd[k].shape for k in sd)
    with torch.no_grad():
        torch.testing.assert_close(model_from_state_dict(merged)(IDX), model(IDX), atol=1e-4, rtol=1e-4)
    if case.linear:   # the layer's own merged weight is the same function the merge uses
        layer = model.get_submodule("blocks.1.ffn.value")
        torch.testing.assert_close(merged["blocks.1.ffn.value.weight"], layer.merged_weight(),
                                   atol=1e-5, rtol=1e-5)
        restored = unmerge_state_dict(merged, tensors, config)
        tol = 1e-5 if case.exact_unmerge else 1e-4
        for k in sd:
            if k.endswith(tuple(f"{t}.weight" for t in V7)):
                torch.testing.assert_close(restored[k], sd[k].float(), atol=tol, rtol=tol)


# ---------------------------------------------------------------- adapter off (the reference)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_adapter_off_computes_the_base_model(case):
    """Preference tuning's reference: inside method.adapter_off the trained model computes the
    base model's output (PiSSA: the ORIGINAL W, not its residual); a full fine-tune cannot."""
    sd, model, names = trained(case)
    method = registry.get(case.method)
    with torch.no_grad():
        adapted = model(IDX)
        want = model_from_state_dict(sd)(IDX)
        if case.kind == "full":
            with pytest.raises(UserError, match="no adapter to switch off"):
                method.adapter_off(model)
            return
        assert (adapted - want).abs().max() > 1e-3        # the trained adapter changes the output
        with method.adapter_off(model):
            torch.testing.assert_close(model(IDX), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(IDX), adapted)   # and it is back on afterwards


# ---------------------------------------------------------------- layer selection
@pytest.mark.parametrize("layers,chosen", [([0, 2], {0, 2}), ("1-2", {1, 2}), ("1", {1})])
@pytest.mark.parametrize("case", ADAPTER_CASES, ids=str)
def test_layer_selection_counts_and_untouched_layers(tmp_path, case, layers, chosen):
    sd, model, names = trained(case, n_layer=3, extra={"layers": layers})
    assert names.config.layers == sorted(chosen)
    tensors = adapter_state_dict(model, names)
    per_layer = len(V7) * len([s for s in _suffixes(case) if any(k.endswith("." + s) for k in tensors)])
    adapter_keys = [k for k in tensors if k.rpartition(".")[2] in _suffixes(case)]
    assert len(adapter_keys) == per_layer * len(chosen)
    assert {int(k.split(".")[1]) for k in adapter_keys} == chosen
    # recorded in adapter_config.json, read back and honoured by merge
    save_adapter(tmp_path / "rwkv-0.pth", tensors, names.config, fingerprint(sd))
    assert json.loads((tmp_path / "adapter_config.json").read_text())["layers"] == sorted(chosen)
    file_sd, config = read_adapter(tmp_path / "rwkv-0.pth")
    merged = merge_state_dict(sd, file_sd, config)
    for k in sd:
        layer = int(k.split(".")[1]) if k.startswith("blocks.") else None
        if layer is not None and layer not in chosen:
            assert torch.equal(merged[k], sd[k]), k              # bit-identical
    some = f"blocks.{min(chosen)}.att.key.weight"
    assert not torch.equal(merged[some].to(sd[some].dtype), sd[some])


def test_merge_refuses_tensors_outside_the_recorded_layers():
    case = ADAPTER_CASES[0]
    sd, model, names = trained(case, n_layer=3, extra={"layers": [0, 1]})
    config = dict(names.config.to_dict(), layers=[0])
    with pytest.raises(UserError, match=r"adapter tensor blocks.1.att.key.miss is in layer 1, but the "
                                        r"adapter was trained on layers \[0\] only"):
        merge_state_dict(sd, adapter_state_dict(model, names), config)


@pytest.mark.parametrize("conf,msg", [
    ({"layers": "3-1"}, r"layers '3-1' ends before it starts"),
    ({"layers": "a-b"}, r"layers 'a-b' is not a layer range"),
    ({"layers": [0, -1]}, r"layers must be a non-empty list of layer numbers >= 0"),
    ({"layers": []}, r"layers must be a non-empty list"),
])
def test_layer_selection_parse_errors(conf, msg):
    with pytest.raises(UserError, match=msg):
        parse_peft("lora", conf)


def test_layer_beyond_the_model_is_refused_at_injection():
    cfg, sd = base()
    with pytest.raises(UserError, match=r"the model has layers 0-1, so layer 5 does not exist"):
        inject(model_of(cfg, sd), parse_peft("miss", {"r": 8, "layers": [0, 5]}))


def test_none_takes_no_options():
    with pytest.raises(UserError, match=r"unknown key 'r' for none; accepted keys: none"):
        parse_peft("none", {"r": 8})
