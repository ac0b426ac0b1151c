"""The Hugging Face-native RWKV-7 layout (spec shared/specs/hf_native_rwkv7.md, "native" =
transformers PR #47780 / RWKV/RWKV7-*-20260805): written by `export --format hf --layout native`,
read by every model reader (--load_model, merge --base, eval, generate)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from export_helpers import IDX, write_pair
from rwkvft.cli import main
from rwkvft.errors import UserError
from rwkvft.formats import load_model, merge_state_dict, read_adapter, read_model
from rwkvft.formats.hf_native import native_config, native_name
from rwkvft.models import model_from_state_dict
from rwkvft.models.init import new_config, random_state_dict
from rwkvft.models.schema import official_shapes

# spec §1: the declared Rwkv7Config keys we write, plus model_type / architectures / dtype
CONFIG_KEYS = {"vocab_size", "hidden_size", "num_hidden_layers", "head_dim", "num_heads",
               "decay_low_rank_dim", "a_low_rank_dim", "v_low_rank_dim", "gate_low_rank_dim",
               "intermediate_size", "norm_eps", "norm_bias", "max_position_embeddings",
               "tie_word_embeddings", "use_cache", "use_deep_embed", "wkv_state_dtype",
               "bos_token_id", "eos_token_id", "pad_token_id", "model_type", "architectures", "dtype"}
_BLOCK = (["att." + n for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "w1", "w2", "a0", "a1",
                                 "a2", "v0", "v1", "v2", "g1", "g2", "k_k", "k_a", "r_k")]
          + [f"att.{n}.weight" for n in ("receptance", "key", "value", "output")]
          + ["att.ln_x.weight", "att.ln_x.bias", "ffn.x_k", "ffn.key.weight", "ffn.value.weight",
             "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"])


def _spec_names(n_layer: int) -> set[str]:
    """Spec §2's key list, written out from the spec (33 per block, ln0 in block 0)."""
    names = {"rwkv7.emb.weight", "rwkv7.ln_out.weight", "rwkv7.ln_out.bias", "head.weight",
             "rwkv7.blocks.0.ln0.weight", "rwkv7.blocks.0.ln0.bias"}
    return names | {f"rwkv7.blocks.{l}.{n}" for l in range(n_layer) for n in _BLOCK}


@pytest.mark.parametrize("n_layer,n_embd,dims,total", [
    (12, 768, {"decay_low_rank_dim": 64, "a_low_rank_dim": 64, "v_low_rank_dim": 32,
               "gate_low_rank_dim": 128}, 12 * 33 + 2 + 4),
    (24, 2048, {"decay_low_rank_dim": 96, "a_low_rank_dim": 96, "v_low_rank_dim": 64,
                "gate_low_rank_dim": 256}, 798)])
def test_names_shapes_and_config_of_the_released_sizes(n_layer, n_embd, dims, total):
    """0.1B and 1.5B (meta tensors: nothing allocated): names, shapes, config.json (spec §1-3)."""
    cfg = new_config(n_layer=n_layer, n_embd=n_embd, vocab_size=65536, head_size=64)
    shapes = official_shapes(cfg)
    native = {native_name(k): s for k, s in shapes.items()}
    assert set(native) == _spec_names(n_layer) and len(native) == total
    C = n_embd
    assert native["rwkv7.blocks.3.att.x_r"] == (1, 1, C) and native["rwkv7.blocks.3.att.k_k"] == (1, 1, C)
    assert native["rwkv7.blocks.3.ffn.x_k"] == (1, 1, C) and native["rwkv7.blocks.3.att.r_k"] == (C // 64, 64)
    assert native["rwkv7.blocks.3.att.w1"] == (C, dims["decay_low_rank_dim"])
    assert native["rwkv7.blocks.3.att.g2"] == (dims["gate_low_rank_dim"], C)
    assert native["rwkv7.blocks.0.ffn.key.weight"] == (4 * C, C) and native["head.weight"] == (65536, C)
    config = native_config(cfg, torch.bfloat16)
    assert set(config) == CONFIG_KEYS
    assert config["architectures"] == ["Rwkv7ForCausalLM"] and config["model_type"] == "rwkv7"
    assert {k: config[k] for k in dims} == dims
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_heads"], config["head_dim"],
            config["intermediate_size"], config["vocab_size"]) == (C, n_layer, C // 64, 64, 4 * C, 65536)
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (0, 0, 0)
    assert config["dtype"] == "bfloat16"
    with torch.device("meta"):
        sd = {k: torch.empty(s, dtype=torch.bfloat16) for k, s in shapes.items()}
    assert sd["emb.weight"].is_meta


def _export(tmp_path, *extra, method="lora", conf='{"r": 4, "lora_alpha": 8}'):
    base, adapter, model, base_sd = write_pair(tmp_path, method, json.loads(conf))
    out = tmp_path / "native"
    assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", "hf",
                 "--layout", "native", "--output", str(out), *extra]) == 0
    return out, base_sd, adapter, model


def test_merged_model_exported_native_reads_back_with_identical_logits(tmp_path):
    out, base_sd, adapter, model = _export(tmp_path, "--dtype", "fp32")
    merged = merge_state_dict(base_sd, *read_adapter(adapter))
    back = read_model(out)
    assert list(back) == list(merged)
    for k in merged:
        assert torch.equal(back[k], merged[k].float()), k
    with torch.no_grad():
        assert torch.equal(load_model(out)(IDX), model_from_state_dict(merged)(IDX))
        torch.testing.assert_close(load_model(out)(IDX), model(IDX), atol=1e-4, rtol=1e-4)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.json", "generation_config.json", "model.safetensors",
                     "rwkv_vocab_v20230424.txt", "tokenizer_config.json"]
    assert json.loads((out / "generation_config.json").read_text()) == \
        {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
    names = set(load_file(str(out / "model.safetensors")))
    assert names == _spec_names(2)


def test_native_export_is_bf16_by_default(tmp_path):
    out, *_ = _export(tmp_path)
    tensors = load_file(str(out / "model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_dtype_is_refused_for_the_fla_layout(tmp_path, capsys):
    base, adapter, _, _ = write_pair(tmp_path, "lora", {"r": 4})
    assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", "hf",
                 "--dtype", "fp16", "--output", str(tmp_path / "o")]) == 2
    assert "--dtype applies to --layout native" in capsys.readouterr().err
    assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", "ai00-lora",
                 "--layout", "native", "--output", str(tmp_path / "o.st")]) == 2
    assert "--layout does not apply to --format ai00-lora" in capsys.readouterr().err


def _hand_written(tmp_path, sd, prefixed: bool, shards: int, suffix=".safetensors"):
    """A native folder written from the spec alone: PR-conv names (or bare), config.json (§1)."""
    folder = tmp_path / f"hand_{prefixed}_{shards}_{suffix[1:]}"
    folder.mkdir()
    names = {k: (("rwkv7." + k) if prefixed and k != "head.weight" else k) for k in sd}
    keys = list(sd)
    parts = [keys[i::shards] for i in range(shards)]
    weight_map = {}
    for i, part in enumerate(parts):
        fname = f"model-{i + 1:05d}-of-{shards:05d}{suffix}" if shards > 1 else f"model{suffix}"
        if suffix == ".bin":
            fname = fname.replace("model", "pytorch_model")
            torch.save({names[k]: sd[k].clone() for k in part}, folder / fname)
        else:
            save_file({names[k]: sd[k].clone() for k in part}, str(folder / fname))
        weight_map.update({names[k]: fname for k in part})
    if shards > 1:
        index = ("pytorch_model.bin" if suffix == ".bin" else "model.safetensors") + ".index.json"
        (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    C = sd["emb.weight"].shape[1]
    (folder / "config.json").write_text(json.dumps({
        "model_type": "rwkv7", "architectures": ["Rwkv7ForCausalLM"], "hidden_size": C,
        "num_hidden_layers": 2, "vocab_size": sd["emb.weight"].shape[0], "head_dim": 16,
        "num_heads": C // 16, "intermediate_size": 4 * C}))
    return folder


@pytest.mark.parametrize("prefixed,shards,suffix", [(True, 1, ".safetensors"), (False, 1, ".safetensors"),
                                                    (True, 3, ".safetensors"), (False, 2, ".bin")])
def test_hand_written_native_folder_loads(tmp_path, prefixed, shards, suffix):
    cfg = new_config(n_layer=2, n_embd=64, vocab_size=97, head_size=16)
    sd = random_state_dict(cfg, seed=3)
    folder = _hand_written(tmp_path, sd, prefixed, shards, suffix)
    back = read_model(folder)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    with torch.no_grad():
        assert torch.equal(load_model(folder)(IDX), model_from_state_dict(sd)(IDX))


def test_config_that_contradicts_the_tensors_is_refused(tmp_path):
    cfg = new_config(n_layer=2, n_embd=64, vocab_size=97, head_size=16)
    folder = _hand_written(tmp_path, random_state_dict(cfg, seed=3), True, 1)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, num_hidden_layers=3)))
    with pytest.raises(UserError, match="num_hidden_layers 3 but the tensors say 2"):
        read_model(folder)
    (folder / "config.json").write_text(json.dumps(dict(config, num_heads=3)))
    with pytest.raises(UserError, match="num_heads 3 but the tensors say 4"):
        read_model(folder)


def test_merge_base_and_inspect_accept_a_native_folder(tmp_path, capsys):
    out, base_sd, adapter, _ = _export(tmp_path, "--dtype", "fp32")
    merged_path = tmp_path / "m.pth"
    # the exported folder as the base of a merge (LoRA leaves the fingerprinted tensors alone)
    assert main(["merge", "--base", str(out), "--adapter", str(adapter), "--output", str(merged_path),
                 "--dtype", "fp32"]) == 0
    want = merge_state_dict(read_model(out), *read_adapter(adapter))
    got = read_model(merged_path)
    assert list(got) == list(want) and all(torch.equal(got[k], want[k].float()) for k in want)
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert "Hugging Face RWKV-7 model folder" in capsys.readouterr().out


@pytest.mark.parametrize("method,conf,peft_type,param", [
    ("lora", {"r": 4, "lora_alpha": 8}, "LORA", "lora_A.weight"), ("miss", {"r": 8}, "MISS", "miss_block")])
def test_hf_peft_adapter_keyed_for_the_native_layout_round_trips(tmp_path, method, conf, peft_type, param):
    base, adapter, _, base_sd = write_pair(tmp_path, method, conf)
    out = tmp_path / "peft_native"
    assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", "hf-peft",
                 "--layout", "native", "--output", str(out)]) == 0
    keys = set(load_file(str(out / "adapter_model.safetensors")))
    assert f"base_model.model.rwkv7.blocks.0.att.key.{param}" in keys
    assert f"base_model.model.rwkv7.blocks.1.ffn.value.{param}" in keys
    peft = json.loads((out / "adapter_config.json").read_text())
    assert peft["peft_type"] == peft_type
    assert peft["target_modules"] == sorted(["att.receptance", "att.key", "att.value", "att.output",
                                             "ffn.key", "ffn.value"])   # qualified (spec §4)
    sd, config = read_adapter(out)
    ours_sd, ours = read_adapter(adapter)
    want = merge_state_dict(base_sd, ours_sd, ours)
    got = merge_state_dict(base_sd, sd, config)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-5, msg=k)
