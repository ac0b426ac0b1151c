"""merge_state_dict / unmerge_state_dict, RWKV-PEFT adapter files and the `rwkvft merge` CLI."""
from __future__ import annotations

import json

import pytest
import torch

from rwkvft.adapters import adapter_state_dict, inject, parse_peft
from rwkvft.adapters.miss import bat_delta
from rwkvft.formats import (fingerprint, merge_state_dict, read_adapter, read_state_dict, save_adapter,
                             unmerge_state_dict, write_state_dict)
from rwkvft.cli import main
from rwkvft.errors import UserError
from rwkvft.models import build_model
from rwkvft.models.init import init_state_dict, new_config, perturb_state_dict

IDX = torch.tensor([[5, 17, 33, 2, 91, 64, 8, 40, 11]])


def tiny_base(seed=0):
    cfg = new_config(n_layer=2, n_embd=64, vocab_size=97, head_size=16)
    return cfg, perturb_state_dict(init_state_dict(cfg, seed), seed=seed + 1)


def model_from(cfg, sd):
    model = build_model(cfg)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.eval()


def trained_adapter(method, conf, parts=(), seed=0):
    """(cfg, base_sd, adapted model, adapter sd, config dict) with random non-zero adapter values."""
    cfg, base_sd = tiny_base()
    model = model_from(cfg, base_sd)
    torch.manual_seed(seed)
    names = inject(model, parse_peft(method, conf), list(parts))
    with torch.no_grad():
        for n in names:
            p = model.get_parameter(n)
            p.add_(torch.randn_like(p) * (0.02 if p.dim() == 3 else 0.05))
    return cfg, base_sd, model, adapter_state_dict(model, names), names.config.to_dict()


METHODS = [("miss", {"r": 8}), ("miss", {"r": 12}), ("miss", {"r": 16, "mode": "bat"}),
           ("miss", {"r": 8, "mode": "bat_in"}), ("miss", {"r": 8, "mode": "mini", "mini_r": 16}),
           ("lora", {"r": 4, "lora_alpha": 16}), ("pissa", {"r": 4})]


@pytest.mark.parametrize("method,conf", METHODS, ids=lambda v: str(v))
def test_merged_forward_equals_adapted_and_unmerge_restores(method, conf):
    cfg, base_sd, model, asd, config = trained_adapter(method, conf, parts=["ln"])
    merged = merge_state_dict(base_sd, asd, config)
    assert list(merged) == list(base_sd)
    assert all(merged[k].shape == base_sd[k].shape for k in base_sd)
    assert merged["blocks.0.att.key.weight"].dtype == torch.float32        # fp32, writer rounds
    assert merged["blocks.0.ln1.weight"].dtype == torch.float32            # trained ln replaced
    assert not torch.equal(merged["blocks.1.ffn.value.weight"].to(torch.bfloat16),
                           base_sd["blocks.1.ffn.value.weight"])
    want = model(IDX)
    torch.testing.assert_close(model_from(cfg, merged)(IDX), want, atol=1e-4, rtol=1e-4)
    back = unmerge_state_dict(merged, asd, config)
    for k in base_sd:
        if k.endswith(".weight") and ("att." in k or "ffn." in k) and ".ln_x." not in k:
            torch.testing.assert_close(back[k].float(), base_sd[k].float(), atol=2e-5, rtol=1e-4)


def test_merge_keeps_untouched_tensors_and_refuses_nan():
    _, base_sd, _, asd, config = trained_adapter("miss", {"r": 8})
    merged = merge_state_dict(base_sd, asd, config)
    assert merged["emb.weight"] is base_sd["emb.weight"]
    asd["blocks.1.att.value.miss"][0, 3] = float("nan")
    with pytest.raises(UserError, match=r"merged tensor blocks.1.att.value.weight contains NaN or Inf"):
        merge_state_dict(base_sd, asd, config)


def test_merge_rejects_adapters_that_do_not_fit():
    _, base_sd, _, asd, config = trained_adapter("miss", {"r": 8})
    bad = dict(asd, **{"blocks.0.att.key.miss": torch.zeros(8, 32)})
    with pytest.raises(UserError, match=r"adapter tensors for blocks.0.att.key \(miss \(8, 32\)\) do not "
                                        r"fit base weight blocks.0.att.key.weight \(64, 64\)"):
        merge_state_dict(base_sd, bad, config)
    with pytest.raises(UserError, match=r"adapter tensor blocks.5.att.key.miss needs a Linear weight "
                                        r"blocks.5.att.key.weight, which the base model does not have"):
        merge_state_dict(base_sd, dict(asd, **{"blocks.5.att.key.miss": torch.zeros(8, 64)}), config)
    with pytest.raises(UserError, match=r"adapter tensor blocks.0.att.time_extra is not in the base model"):
        merge_state_dict(base_sd, dict(asd, **{"blocks.0.att.time_extra": torch.zeros(4, 16, 16)}), config)
    # time_state is the state method's tensor (h12), so in a MiSS file it is a method mix-up
    with pytest.raises(UserError, match=r"adapter tensor blocks.0.att.time_state does not belong to a miss adapter"):
        merge_state_dict(base_sd, dict(asd, **{"blocks.0.att.time_state": torch.zeros(4, 16, 16)}), config)
    with pytest.raises(UserError, match=r"adapter tensor blocks.0.ln1.weight has shape \(32,\) but the base has \(64,\)"):
        merge_state_dict(base_sd, dict(asd, **{"blocks.0.ln1.weight": torch.zeros(32)}), config)
    with pytest.raises(UserError, match=r"adapter tensor blocks.0.att.key.lora_A does not belong to a miss adapter"):
        merge_state_dict(base_sd, dict(asd, **{"blocks.0.att.key.lora_A": torch.zeros(8, 64)}), config)
    _, _, _, psd, pconf = trained_adapter("pissa", {"r": 4})
    del psd["blocks.0.att.key.lora_A0"]
    with pytest.raises(UserError, match=r"adapter lacks blocks.0.att.key.lora_A0 \(needed for pissa\)"):
        merge_state_dict(base_sd, psd, pconf)


# ---------------------------------------------------------------- RWKV-PEFT files
def _write_base(tmp_path, dtype=torch.bfloat16):
    cfg, sd = tiny_base()
    path = tmp_path / "base.pth"
    write_state_dict(sd, path, dtype=dtype)
    return cfg, read_state_dict(path), path


def test_rwkv_peft_disha_merges_to_w_plus_tiled_dt(tmp_path):
    _, base, base_path = _write_base(tmp_path)
    d = torch.randn(6, 256)                                    # r=6 does not divide in=64
    adir = tmp_path / "peft"
    adir.mkdir()
    torch.save({"model.blocks.1.ffn.key.disha": d, "model.blocks.0.ln1.weight": torch.full((64,), 0.5)},
               adir / "rwkv-0.pth")
    out = tmp_path / "merged.pth"
    assert main(["merge", "--base", str(base_path), "--adapter", str(adir / "rwkv-0.pth"),
                 "--output", str(out), "--dtype", "fp32"]) == 0
    merged = torch.load(out, weights_only=True)
    w = base["blocks.1.ffn.key.weight"].float()
    want = w + d.t().repeat(1, 11)[:, :64]                     # ceil(64 / 6) = 11 tiles
    assert torch.equal(merged["blocks.1.ffn.key.weight"], want)
    assert torch.equal(merged["blocks.0.ln1.weight"], torch.full((64,), 0.5))
    assert set(merged) == set(base) and merged["head.weight"].dtype == torch.float32


def test_rwkv_peft_3d_disha_is_input_block_bat(tmp_path):
    _, base, _ = _write_base(tmp_path)
    d = torch.randn(8, 8, 8) * 0.05                            # in/r = 64/8 = 8 blocks
    (tmp_path / "a").mkdir()
    torch.save({"blocks.0.att.output.disha": d}, tmp_path / "a" / "rwkv-3.pth")
    sd, config = read_adapter(tmp_path / "a" / "rwkv-3.pth")
    assert config["mode"] == "bat_in" and set(sd) == {"blocks.0.att.output.miss"}
    merged = merge_state_dict(base, sd, config)
    w = base["blocks.0.att.output.weight"].float()
    blk = w[8:16, 24:32]                                       # row block 1, column block 3
    torch.testing.assert_close(merged["blocks.0.att.output.weight"][8:16, 24:32],
                               blk + blk @ d[3] + d[3])
    torch.testing.assert_close(merged["blocks.0.att.output.weight"] - w, bat_delta(w, d, "bat_in"))


def test_rwkv_peft_lora_needs_alpha(tmp_path, capsys):
    _, base, base_path = _write_base(tmp_path)
    a, b = torch.randn(4, 64), torch.randn(64, 4)
    (tmp_path / "l").mkdir()
    adapter = tmp_path / "l" / "rwkv-1.pth"
    torch.save({"model.blocks.0.att.value.lora_A": a, "model.blocks.0.att.value.lora_B": b}, adapter)
    args = ["merge", "--base", str(base_path), "--adapter", str(adapter), "--output", str(tmp_path / "m.pth")]
    assert main(args) == 2
    assert "has no alpha (RWKV-PEFT files do not store it); pass --lora_alpha" in capsys.readouterr().err
    assert main(args + ["--lora_alpha", "8", "--dtype", "fp32"]) == 0
    merged = torch.load(tmp_path / "m.pth", weights_only=True)
    torch.testing.assert_close(merged["blocks.0.att.value.weight"],
                               base["blocks.0.att.value.weight"].float() + 2.0 * b @ a)


# ---------------------------------------------------------------- CLI
def test_cli_merge_own_adapter_bf16_default(tmp_path):
    cfg, base, base_path = _write_base(tmp_path)
    model = model_from(cfg, base)
    names = inject(model, parse_peft("miss", '{"r": 8}'))
    with torch.no_grad():
        for n in names:
            model.get_parameter(n).normal_(0, 0.05)
    asd = adapter_state_dict(model, names)
    save_adapter(tmp_path / "run" / "rwkv-2.pth", asd, names.config, fingerprint(base))
    out = tmp_path / "merged.pth"
    assert main(["merge", "--base", str(base_path), "--adapter", str(tmp_path / "run" / "rwkv-2.pth"),
                 "--output", str(out)]) == 0
    merged = torch.load(out, weights_only=True)
    assert list(merged) == list(base)
    assert all(t.dtype == torch.bfloat16 and t.shape == base[k].shape for k, t in merged.items())
    want = merge_state_dict(base, asd, names.config)["blocks.0.att.key.weight"]
    assert torch.equal(merged["blocks.0.att.key.weight"], want.to(torch.bfloat16))


def test_cli_merge_refuses_to_overwrite(tmp_path, capsys):
    _, base, base_path = _write_base(tmp_path)
    (tmp_path / "a").mkdir()
    adapter = tmp_path / "a" / "rwkv-0.pth"
    torch.save({"blocks.0.att.key.disha": torch.zeros(8, 64)}, adapter)
    before = base_path.read_bytes()
    common = ["merge", "--base", str(base_path), "--adapter", str(adapter)]
    assert main(common + ["--output", str(base_path)]) == 2
    assert "is the base model itself; write the merged model to another path" in capsys.readouterr().err
    assert main(common + ["--output", str(base_path), "--force"]) == 2
    assert base_path.read_bytes() == before
    out = tmp_path / "out.pth"
    out.write_bytes(b"keep me")
    assert main(common + ["--output", str(out)]) == 2
    assert "already exists; pass --force to replace it" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(common + ["--output", str(out), "--force"]) == 0
    assert set(torch.load(out, weights_only=True)) == set(base)


def test_cli_merge_wrong_base_is_refused(tmp_path, capsys):
    cfg, base, base_path = _write_base(tmp_path)
    _, _, _, asd, config = trained_adapter("miss", {"r": 8})
    save_adapter(tmp_path / "a" / "rwkv-0.pth", asd, config, fingerprint(base))
    other_cfg = new_config(n_layer=2, n_embd=32, vocab_size=97, head_size=16)
    write_state_dict(init_state_dict(other_cfg, 0), tmp_path / "other.pth")
    assert main(["merge", "--base", str(tmp_path / "other.pth"), "--adapter", str(tmp_path / "a" / "rwkv-0.pth"),
                 "--output", str(tmp_path / "m.pth")]) == 2
    assert "trained on a different base model (n_embd 64 there, 32 here)" in capsys.readouterr().err
    assert not (tmp_path / "m.pth").exists()


def test_cli_merge_st_format_is_ai00_ready(tmp_path):
    from safetensors import safe_open
    _, base, base_path = _write_base(tmp_path)
    (tmp_path / "a").mkdir()
    torch.save({"blocks.0.att.key.disha": torch.randn(8, 64) * 0.01}, tmp_path / "a" / "rwkv-0.pth")
    out = tmp_path / "merged.st"
    assert main(["merge", "--base", str(base_path), "--adapter", str(tmp_path / "a" / "rwkv-0.pth"),
                 "--output", str(out)]) == 0
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        keys = set(f.keys())
        assert keys == {k.lower() for k in base}
        w1 = f.get_tensor("blocks.1.att.w1")
        assert w1.dtype == torch.float16 and w1.shape == base["blocks.1.att.w1"].shape[::-1]
        torch.testing.assert_close(w1, base["blocks.1.att.w1"].t().half())
        assert f.get_tensor("blocks.0.att.r_k").shape == base["blocks.0.att.r_k"].shape
        assert f.get_tensor("blocks.0.att.key.weight").shape == (64, 64)       # Linear: not transposed
    code = main(["merge", "--base", str(base_path), "--adapter", str(tmp_path / "a" / "rwkv-0.pth"),
                 "--output", str(tmp_path / "x.st"), "--dtype", "bf16"])
    assert code == 2


def test_adapter_config_json_is_complete(tmp_path):
    _, base_sd, model, asd, config = trained_adapter("miss", {"r": 8, "mode": "mini", "mini_r": 16}, parts=["time"])
    save_adapter(tmp_path / "rwkv-1.safetensors", asd, config, fingerprint(base_sd))
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    for key, value in {"method": "miss", "mode": "mini", "r": 8, "mini_r": 16, "dropout": 0.0,
                       "train_parts": ["time"], "format": "rwkvft-adapter"}.items():
        assert cfg[key] == value, key
    assert cfg["targets"] == sorted(["att.receptance", "att.key", "att.value", "att.output",
                                     "ffn.key", "ffn.value"])
    assert set(cfg["base"]) == {"version", "n_layer", "n_embd", "vocab_size", "checksum"}
    with pytest.raises(UserError, match=r"adapter file .*rwkv-1.bin must end in .pth or .safetensors"):
        save_adapter(tmp_path / "rwkv-1.bin", asd, config)
