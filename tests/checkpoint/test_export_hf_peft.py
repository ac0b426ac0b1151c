"""HF peft adapter folders: export verified with PeftModel on the rwkv7-hf model of our base;
import of HF peft folders, RWKV-PEFT's `--merge 0` folder included."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import rel_err
from export_helpers import (
    HF_SIZE, IDX, logits_of, model_from, normal_modes, snapshot, tiny_base, write_pair)
from export_helpers import umask022  # noqa: F401 (an autouse fixture)
from rwkvft.checkpoint.hf_export import write_hf_folder
from rwkvft.checkpoint.merge import merge_state_dict
from rwkvft.checkpoint.rwkv_format import read_state_dict
from rwkvft.cli import main

# test dependencies (pyproject [test]; tests/test_gpu_collection.py fails where CI lacks them);
# importorskip so that `pytest -m gpu` still collects on the device machine, which has neither
peft = pytest.importorskip("peft")
rwkv7_hf = pytest.importorskip("rwkv7_hf")


CASES = [("miss", {"r": 8}), ("miss", {"r": 16, "mode": "bat"}),
         ("miss", {"r": 8, "mode": "mini", "mini_r": 16}), ("lora", {"r": 4, "lora_alpha": 16}),
         ("pissa", {"r": 4})]


@pytest.mark.parametrize("method,conf", CASES, ids=lambda v: str(v))
def test_peft_model_from_pretrained_gives_our_adapted_logits(tmp_path, method, conf):
    base, adapter, model, base_sd = write_pair(tmp_path, method, conf, **HF_SIZE)
    write_hf_folder(base_sd, tmp_path / "hf-base")
    out = tmp_path / "peft"
    assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", "hf-peft",
                 "--output", str(out)]) == 0
    normal_modes(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == ("MISS" if method == "miss" else "LORA")
    hf = rwkv7_hf.RWKV7ForCausalLM.from_pretrained(str(tmp_path / "hf-base"), dtype=torch.float32)
    peft_model = peft.PeftModel.from_pretrained(hf, str(out)).eval()
    with torch.no_grad():
        theirs = peft_model(input_ids=IDX).logits.float()
    assert rel_err(theirs, logits_of(model)) <= 1e-4
    # and the folder imports back: merging it gives our merge
    from rwkvft.checkpoint.adapter_io import read_adapter
    ours = merge_state_dict(base_sd, *read_adapter(adapter))
    back = merge_state_dict(base_sd, *read_adapter(out))
    for k in ours:
        torch.testing.assert_close(back[k].float(), ours[k].float(), rtol=1e-5, atol=1e-6, msg=k)


def _rwkv_peft_folder(tmp_path, peft_config):
    """What RWKV-PEFT's `--merge 0` writes: HF peft's get_peft_model on its own RWKV module
    (checkpoint names), target_modules receptance/key/value/output, save_pretrained."""
    cfg, base_sd = tiny_base()
    model = model_from(cfg, base_sd)

    class DummyConfig(dict):   # RWKV-PEFT attaches a small config object the same way
        model_type, tie_word_embeddings = "rwkv", False

        def get(self, key, default=None):
            return getattr(self, key, default)

    model.config = DummyConfig()
    pm = peft.get_peft_model(model, peft_config(target_modules=["receptance", "key", "value", "output"]))
    torch.manual_seed(3)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    expected = logits_of(pm)
    pm.save_pretrained(str(tmp_path / "proj-adapter"))
    base = tmp_path / "base.pth"
    torch.save(base_sd, base)
    return base, tmp_path / "proj-adapter", expected


@pytest.mark.parametrize("kind", ["miss", "lora"])
def test_merge_reads_rwkv_peft_merge0_folder(tmp_path, kind):
    make = {"miss": lambda **kw: peft.MissConfig(r=8, **kw),
            "lora": lambda **kw: peft.LoraConfig(r=4, lora_alpha=8, **kw)}[kind]
    base, folder, expected = _rwkv_peft_folder(tmp_path, make)
    keys = json.loads((folder / "adapter_config.json").read_text())
    assert keys["peft_type"] == kind.upper()
    out = tmp_path / "merged.pth"
    assert main(["merge", "--base", str(base), "--adapter", str(folder), "--output", str(out),
                 "--dtype", "fp32"]) == 0
    from rwkvft.models.init import new_config
    merged = model_from(new_config(2, 64, 97, 16), read_state_dict(out))
    assert rel_err(logits_of(merged), expected) <= 1e-5


def test_foreign_architecture_peft_folder_is_refused_in_one_line(tmp_path, capsys):
    base, _, _, _ = write_pair(tmp_path, "miss", {"r": 8})
    folder = tmp_path / "llama-adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 64),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(64, 4)},
              str(folder / "adapter_model.safetensors"))
    before = snapshot(tmp_path)
    assert main(["merge", "--base", str(base), "--adapter", str(folder), "--output",
                 str(tmp_path / "m.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.layers.0.self_attn.q_proj" in err[0] and "another architecture" in err[0]
    assert snapshot(tmp_path) == before


def test_hf_peft_refuses_bat_in_and_train_parts(tmp_path, capsys):
    base, adapter, _, _ = write_pair(tmp_path, "miss", {"r": 8, "mode": "bat_in"})
    assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", "hf-peft",
                 "--output", str(tmp_path / "p")]) == 2
    assert "bat_in" in capsys.readouterr().err and not (tmp_path / "p").exists()
    base, adapter, _, _ = write_pair(tmp_path / "b", "miss", {"r": 8}, ["ln"])
    assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", "hf-peft",
                 "--output", str(tmp_path / "p")]) == 2
    assert "--format hf" in capsys.readouterr().err
