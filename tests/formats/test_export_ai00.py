"""`rwkvft export --format ai00-lora`: Ai00's own blend rule on the base reproduces our merge."""
from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file

from export_helpers import adapted, normal_modes, snapshot, write_pair
from export_helpers import umask022  # noqa: F401 (an autouse fixture)
from rwkvft.formats import ai00_lora_tensors, ai00_state_dict, merge_state_dict
from rwkvft.cli import main

# web-rwkv src/runtime/v7.rs / v6.rs: names loaded with load_matrix_f16 (a LoRA tensor of that
# name is added); every other blended name is loaded with load_vector_* (replaced).
WEB_RWKV_MATRICES = {"w1", "w2", "a1", "a2", "g1", "g2", "v1", "v2", "r_k",
                     "time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2"}


def ai00_blend(base_st: dict, lora: dict, alpha: float) -> dict:
    """web-rwkv loader.rs with LoraBlend::full(alpha): W += alpha/r lora.1 @ lora.0^T (r from
    lora.0's 2nd dim); other tensors: matrices += t, vectors = t."""
    out = {k: v.float().clone() for k, v in base_st.items()}
    for k, t in lora.items():
        if k.endswith(".lora.0"):
            name = k[:-len(".lora.0")]
            x, y = t.float(), lora[name + ".lora.1"].float()
            out[name + ".weight"] += alpha / x.shape[1] * (y @ x.t())
        elif not k.endswith(".lora.1"):
            if k.rpartition(".")[2] in WEB_RWKV_MATRICES:
                out[k] += t.float()
            else:
                out[k] = t.float().reshape(out[k].shape)
    return out


CASES = [("miss", {"r": 8}, ["ln", "time"], "x070"), ("miss", {"r": 12}, [], "x070"),
         ("miss", {"r": 8, "mode": "mini", "mini_r": 16}, [], "x070"),
         ("lora", {"r": 4, "lora_alpha": 16}, ["ln"], "x070"), ("pissa", {"r": 4}, [], "x070"),
         ("miss", {"r": 8}, ["time"], "x060")]


@pytest.mark.parametrize("method,conf,parts,version", CASES, ids=lambda v: str(v))
def test_ai00_blend_of_export_equals_our_merge(method, conf, parts, version):
    _, base_sd, _, asd, config = adapted(method, conf, parts, version)
    lora, alpha = ai00_lora_tensors(base_sd, asd, config)
    assert all(t.dtype == torch.float16 for t in lora.values())
    want_alpha = {"miss": conf["r"], "lora": conf.get("lora_alpha"), "pissa": 2 * conf["r"]}[method]
    assert alpha == want_alpha
    x = lora["blocks.0.att.key.lora.0"]
    assert x.shape == (64, want_alpha if method != "lora" else conf["r"])   # [in, r]
    blended = ai00_blend(ai00_state_dict(base_sd), lora, alpha)
    ref = ai00_state_dict(merge_state_dict(base_sd, asd, config))
    assert set(blended) == set(ref)
    for k in ref:
        torch.testing.assert_close(blended[k], ref[k].float(), rtol=4e-3, atol=2e-3, msg=k)
    if method == "miss" and conf.get("mode") is None:
        e = lora["blocks.0.ffn.key.lora.0"].float()            # E^T: 0/1 tiling of identities
        assert torch.equal(e, (torch.arange(64)[:, None] % conf["r"] == torch.arange(conf["r"])).float())


def test_cli_export_ai00_lora_file_mode_and_config_lines(tmp_path, capsys):
    base, adapter, _, _ = write_pair(tmp_path, "miss", {"r": 8}, ["ln"])
    out = tmp_path / "lora.st"
    assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", "ai00-lora",
                 "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "[[lora]]" in text and f'path = "{out.resolve()}"' in text and "alpha = 8" in text
    normal_modes(out)
    assert "blocks.1.ln1.weight" in load_file(str(out))
    assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", "ai00-lora",
                 "--output", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err


def test_bat_and_emb_refused_in_one_line(tmp_path, capsys):
    base, adapter, _, _ = write_pair(tmp_path, "miss", {"r": 16, "mode": "bat"})
    before = snapshot(tmp_path)
    out = tmp_path / "lora.st"
    assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", "ai00-lora",
                 "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MiSS bat" in err[0] and "--format st" in err[0]
    assert not out.exists() and snapshot(tmp_path) == before
    _, base_sd, _, asd, config = adapted("miss", {"r": 8}, ["emb"])
    with pytest.raises(Exception, match="emb and head"):
        ai00_lora_tensors(base_sd, asd, config)
