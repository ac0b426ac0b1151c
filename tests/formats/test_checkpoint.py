"""Official checkpoint IO: round trips, architecture inference, and every bad-input message."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from rwkvft.formats import load_model, read_state_dict, write_state_dict
from rwkvft.models.schema import check_against, infer_config, x070_shapes
from rwkvft.errors import UserError
from rwkvft.models.config import ModelConfig
from rwkvft.models.init import new_config


def meta_state_dict(cfg: ModelConfig) -> dict:
    """Shapes only (no memory): enough for inference on multi-GB sizes."""
    return {k: torch.empty(s, device="meta") for k, s in x070_shapes(cfg).items()}


def assert_same(a: dict, b: dict, ordered: bool = True) -> None:
    assert list(a) == list(b) if ordered else sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


def dir_listing(path) -> list[str]:
    return sorted(os.listdir(path))


# ---------------------------------------------------------------------------------------------
# round trips

@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_load_save_load_is_bit_identical(make_checkpoint, tmp_path, suffix, dtype):
    sd = read_state_dict(make_checkpoint(dtype=dtype))
    out = write_state_dict(sd, tmp_path / f"copy{suffix}", dtype=None)
    again = read_state_dict(out)
    assert_same(sd, again, ordered=suffix == ".pth")  # safetensors files sort their keys
    out2 = write_state_dict(again, tmp_path / f"copy2{suffix}", dtype=None)
    assert_same(again, read_state_dict(out2))
    assert dir_listing(tmp_path) == sorted([f"copy{suffix}", f"copy2{suffix}"])  # no temp files left


def test_default_write_is_official_bf16(make_checkpoint, tmp_path):
    sd = read_state_dict(make_checkpoint())
    out = write_state_dict(sd, tmp_path / "bf16.pth")
    raw = torch.load(out, weights_only=True)  # what the pip package / RWKV Runner see
    assert type(raw) is dict and list(raw) == list(sd)
    for k, t in raw.items():
        assert t.dtype == torch.bfloat16 and t.is_contiguous()
        assert torch.equal(t, sd[k].to(torch.bfloat16))
    assert raw["blocks.0.att.x_r"].shape == (1, 1, 128) and raw["blocks.0.att.r_k"].shape == (2, 64)


def test_write_puts_keys_in_official_order(tmp_path):
    sd = {"head.weight": torch.ones(2, 2), "ln_out.weight": torch.ones(2),
          "blocks.1.att.r_k": torch.ones(1, 2), "blocks.0.att.ln_x.weight": torch.ones(2),
          "emb.weight": torch.ones(2, 2)}
    out = write_state_dict(sd, tmp_path / "o.pth")
    assert list(torch.load(out, weights_only=True)) == [
        "emb.weight", "blocks.0.att.ln_x.weight", "blocks.1.att.r_k", "ln_out.weight", "head.weight"]


def test_written_tensors_own_their_storage(tmp_path):
    base = torch.arange(12.0)
    out = write_state_dict({"emb.weight": base[:6].view(2, 3), "head.weight": base[6:].view(2, 3)},
                           tmp_path / "v.safetensors", dtype=None)
    sd = read_state_dict(out)
    assert torch.equal(sd["head.weight"], base[6:].view(2, 3))


# ---------------------------------------------------------------------------------------------
# inference

@pytest.mark.parametrize("n_layer,n_embd", [(12, 768), (24, 1024), (24, 2048), (32, 2560), (32, 4096)])
def test_infer_config_of_released_sizes(n_layer, n_embd):
    cfg = new_config(n_layer, n_embd)
    got = infer_config(meta_state_dict(cfg))
    assert got == cfg
    assert got.n_head == n_embd // 64 and len(x070_shapes(cfg)) == 33 * n_layer + 6


def test_infer_config_custom_dims_and_no_layer0_v():
    # 13.3B ("14B") dims are custom (spec §2.2): they must come from shapes, not formulas
    cfg = ModelConfig("x070", 61, 4096, 65536, 64, 16384, d_decay=192, d_aaa=192, d_mv=128,
                      d_gate=384, layer0_v=False)
    sd = meta_state_dict(cfg)
    assert len(sd) == 33 * 61 + 3 and infer_config(sd) == cfg


def test_infer_config_accepts_flat_vectors(make_checkpoint):
    official = infer_config(read_state_dict(make_checkpoint()))
    assert infer_config(read_state_dict(make_checkpoint(flat=True))) == official
    assert official.n_embd == 128 and official.vocab_size == 512 and official.n_layer == 2


def v6_state_dict(L=2, C=64, V=16, H=1, F=224, Dm=32, Dd=64) -> dict:
    sd = {"emb.weight": torch.zeros(V, C), "ln_out.weight": torch.ones(C),
          "ln_out.bias": torch.zeros(C), "head.weight": torch.zeros(V, C),
          "blocks.0.ln0.weight": torch.ones(C), "blocks.0.ln0.bias": torch.zeros(C)}
    for l in range(L):
        p = f"blocks.{l}."
        for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.ln_x.weight", "att.ln_x.bias"):
            sd[p + n] = torch.ones(C)
        for n in ("x", "w", "k", "v", "r", "g"):
            sd[p + f"att.time_maa_{n}"] = torch.zeros(1, 1, C)
        sd.update({p + "att.time_maa_w1": torch.zeros(C, 5 * Dm), p + "att.time_maa_w2": torch.zeros(5, Dm, C),
                   p + "att.time_decay": torch.zeros(1, 1, C), p + "att.time_decay_w1": torch.zeros(C, Dd),
                   p + "att.time_decay_w2": torch.zeros(Dd, C), p + "att.time_faaaa": torch.zeros(H, C // H)})
        for n in ("receptance", "key", "value", "gate", "output"):
            sd[p + f"att.{n}.weight"] = torch.zeros(C, C)
        sd.update({p + "ffn.time_maa_k": torch.zeros(1, 1, C), p + "ffn.time_maa_r": torch.zeros(1, 1, C),
                   p + "ffn.key.weight": torch.zeros(F, C), p + "ffn.receptance.weight": torch.zeros(C, C),
                   p + "ffn.value.weight": torch.zeros(C, F)})
    return sd


def test_rwkv6_is_recognised_and_loads(tmp_path):
    sd = v6_state_dict()
    cfg = infer_config(sd)
    assert (cfg.version, cfg.n_layer, cfg.n_embd, cfg.head_size, cfg.dim_ffn, cfg.d_decay, cfg.d_mix) \
        == ("x060", 2, 64, 64, 224, 64, 32)
    write_state_dict(sd, tmp_path / "v6.pth")
    assert load_model(tmp_path / "v6.pth").config.version == "x060"


def test_rwkv5_is_recognised_and_incomplete_files_refused(tmp_path):
    sd = {k: v for k, v in v6_state_dict().items() if "time_maa" not in k and "time_decay_w" not in k}
    for l in range(2):
        sd[f"blocks.{l}.att.time_decay"] = torch.zeros(1, 64)
    # an x052 file needs its time_mix_* lerps: without them it is refused by name
    with pytest.raises(UserError, match="time_mix"):
        infer_config(sd)
    for l in range(2):
        for k in ("att.time_mix_k", "att.time_mix_v", "att.time_mix_r", "att.time_mix_g",
                  "ffn.time_mix_k", "ffn.time_mix_r"):
            sd[f"blocks.{l}.{k}"] = torch.zeros(1, 1, 64)
    assert infer_config(sd).version == "x052"
    write_state_dict(sd, tmp_path / "v5.pth")
    assert load_model(tmp_path / "v5.pth").config.version == "x052"


# ---------------------------------------------------------------------------------------------
# bad files

def test_missing_path_and_directory(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found: .*nope.pth"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(UserError, match="checkpoint is a directory"):
        read_state_dict(tmp_path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(make_checkpoint, tmp_path, suffix):
    data = open(make_checkpoint(suffix=suffix), "rb").read()
    bad = tmp_path / f"trunc{suffix}"
    bad.write_bytes(data[: len(data) // 2])
    kind = "truncated or not a PyTorch checkpoint" if suffix == ".pth" else "not a readable safetensors"
    with pytest.raises(UserError, match=kind):
        read_state_dict(bad)


@pytest.mark.parametrize("content", [b"", b"hello world, not a model\n" * 10, bytes(range(256))])
def test_corrupt_pth(tmp_path, content):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(UserError, match=r"bad.pth is truncated or not a PyTorch checkpoint .*re-download"):
        read_state_dict(bad)


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(UserError, match="holds a list, not a state dict"):
        read_state_dict(tmp_path / "list.pth")
    torch.save({"emb.weight": torch.zeros(2), "epoch": 3}, tmp_path / "mixed.pth")
    with pytest.raises(UserError, match="not a plain state dict: entries 'epoch' are not tensors"):
        read_state_dict(tmp_path / "mixed.pth")


class NeedsCode:
    pass


def test_pickle_that_needs_code(tmp_path):
    torch.save({"emb.weight": torch.zeros(2), "obj": NeedsCode()}, tmp_path / "code.pth")
    with pytest.raises(UserError, match=r"contains Python objects \(.*NeedsCode\) that need code to load"):
        read_state_dict(tmp_path / "code.pth")


def test_unknown_architecture_names_keys(tmp_path):
    torch.save({"model.embed.weight": torch.zeros(2, 2), "lm_head.weight": torch.zeros(2, 2)},
               tmp_path / "hf.pth")
    with pytest.raises(UserError, match="unknown architecture.*keys seen: model.embed.weight, lm_head.weight"):
        infer_config(read_state_dict(tmp_path / "hf.pth"))


def test_rwkv4_is_refused():
    sd = {"emb.weight": torch.zeros(4, 8), "blocks.0.ln1.weight": torch.zeros(8),
          "blocks.0.att.time_mix_k": torch.zeros(1, 1, 8)}
    with pytest.raises(UserError, match=r"unsupported architecture \(RWKV-4 / RWKV-5.0"):
        infer_config(sd)


def test_deepembed_is_refused(make_checkpoint):
    sd = read_state_dict(make_checkpoint())
    sd["blocks.0.ffn.s_emb.weight"] = torch.zeros(512, 32)
    with pytest.raises(UserError, match="DeepEmbed checkpoint"):
        infer_config(sd)


def test_preconverted_strategy_file(tmp_path):
    torch.save({"emb.weight": torch.zeros(2, 2), "_strategy": "cpu fp32", "_version": "0.7"},
               tmp_path / "conv.pth")
    with pytest.raises(UserError, match=r"pre-converted by the rwkv pip package .*use the original .pth"):
        read_state_dict(tmp_path / "conv.pth")
    with pytest.raises(UserError, match="pre-converted"):
        infer_config({"emb.weight": torch.zeros(2, 2), "_strategy": torch.zeros(1)})


def test_incomplete_and_inconsistent_files(make_checkpoint):
    sd = read_state_dict(make_checkpoint())
    missing = {k: v for k, v in sd.items() if k != "blocks.1.att.g2"}
    with pytest.raises(UserError, match="missing 1 tensor.*blocks.1.att.g2"):
        infer_config(missing)
    wrong = dict(sd, **{"blocks.1.att.w2": torch.zeros(5, 128)})
    with pytest.raises(UserError, match=r"blocks.1.att.w2 has shape \(5, 128\), expected \(32, 128\)"):
        infer_config(wrong)
    gap = {k: v for k, v in sd.items() if not k.startswith("blocks.0.")}
    with pytest.raises(UserError, match=r"lacks layer\(s\) \[0\]"):
        infer_config(gap)
    with pytest.raises(UserError, match="malformed checkpoint key 'blocks.x.att.r_k'"):
        infer_config(dict(sd, **{"blocks.x.att.r_k": torch.zeros(2, 64)}))


def test_extra_tensors_are_refused_by_the_model(make_checkpoint, tmp_path):
    sd = read_state_dict(make_checkpoint())
    sd["blocks.0.att.receptance.lora_A"] = torch.zeros(4, 128)
    write_state_dict(sd, tmp_path / "extra.pth")
    with pytest.raises(UserError, match="1 tensor.*does not use, e.g. blocks.0.att.receptance.lora_A"):
        load_model(tmp_path / "extra.pth")


# ---------------------------------------------------------------------------------------------
# user-given sizes

@pytest.mark.parametrize("field,value", [("n_layer", 3), ("n_embd", 256), ("vocab_size", 65536),
                                         ("head_size", 32)])
def test_check_against_contradictions(make_checkpoint, field, value):
    cfg = infer_config(read_state_dict(make_checkpoint()))
    check_against(cfg, **{field: getattr(cfg, field)})  # agreeing values pass
    check_against(cfg, **{field: 0})                     # 0 = not given
    with pytest.raises(UserError, match=f"--{field} {value} contradicts the checkpoint, which has "
                                        f"{field} {getattr(cfg, field)}"):
        check_against(cfg, **{field: value})


def test_check_against_version(make_checkpoint):
    cfg = infer_config(read_state_dict(make_checkpoint()))
    for ok in ("x070", "7", "v7", "RWKV7", ""):
        check_against(cfg, version=ok)
    with pytest.raises(UserError, match="version 'x060' contradicts the checkpoint, which is x070"):
        check_against(cfg, version="x060")
    with pytest.raises(UserError, match="unknown model version 'x999'"):
        check_against(cfg, version="x999")
    v6 = dataclasses.replace(cfg, version="x060")
    check_against(v6, version="6")


# ---------------------------------------------------------------------------------------------
# bad writes leave nothing behind

def test_bad_writes_write_nothing(tmp_path):
    with pytest.raises(UserError, match="output path .* is a directory"):
        write_state_dict({"a": torch.zeros(1)}, tmp_path)
    with pytest.raises(UserError, match=r"entries \['n'\] are not tensors"):
        write_state_dict({"a": torch.zeros(1), "n": 1}, tmp_path / "x.pth")
    assert dir_listing(tmp_path) == []


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "keep.pth"
    target.write_bytes(b"previous contents")

    def disk_full(obj, f, *args, **kwargs):
        open(f, "wb").write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_state_dict({"emb.weight": torch.zeros(2)}, target)
    assert target.read_bytes() == b"previous contents" and dir_listing(tmp_path) == ["keep.pth"]
