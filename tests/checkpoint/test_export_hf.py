"""`rwkvft export --format hf`: the rwkv7-hf package loads our folder and gives our logits."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import rel_err
from export_helpers import HF_SIZE, IDX, logits_of, normal_modes, snapshot, write_pair
from export_helpers import umask022  # noqa: F401 (an autouse fixture)
from rwkvft.checkpoint.merge import merge_state_dict
from rwkvft.checkpoint.rwkv_format import read_state_dict
from rwkvft.cli import main

# test dependency (pyproject [test]; tests/test_gpu_collection.py fails where CI lacks it);
# importorskip so that `pytest -m gpu` still collects on the device machine, which lacks it
rwkv7_hf = pytest.importorskip("rwkv7_hf")


def hf_logits(folder, idx=IDX):
    model = rwkv7_hf.RWKV7ForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=idx).logits.float()


def export(base, adapter, fmt, out, *extra):
    return main(["export", "--base", str(base), "--adapter", str(adapter), "--format", fmt,
                 "--output", str(out), *extra])


def test_hf_folder_loads_in_rwkv7_hf_with_our_logits(tmp_path, capsys):
    base, adapter, model, base_sd = write_pair(tmp_path, "miss", {"r": 8}, ["ln", "time"], **HF_SIZE)
    out = tmp_path / "hf"
    assert export(base, adapter, "hf", out) == 0
    assert "rwkv7_hf" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {
        "config.json", "generation_config.json", "model.safetensors", "rwkv_vocab_v20230424.txt",
        "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"}
    normal_modes(out)
    assert json.loads((out / "config.json").read_text())["model_type"] == "rwkv7"
    ours = logits_of(model)
    assert rel_err(hf_logits(out), ours) <= 1e-4
    # and the folder reads back as the merged official state dict
    from rwkvft.checkpoint.adapter_io import read_adapter
    asd, config = read_adapter(adapter)
    merged = merge_state_dict(base_sd, asd, config)
    back = read_state_dict(out)
    assert set(back) == set(merged) - {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}
    for k, t in back.items():
        assert t.shape == merged[k].shape, k
        torch.testing.assert_close(t, merged[k].float(), rtol=0, atol=0, msg=k)


def test_hf_tokenizer_files_give_world_ids(tmp_path):
    base, adapter, _, _ = write_pair(tmp_path, "lora", {"r": 4, "lora_alpha": 8}, **HF_SIZE)
    assert export(base, adapter, "hf", tmp_path / "hf") == 0
    from rwkvft.data.tokenizer import WorldTokenizer
    tok = rwkv7_hf.RWKV7Tokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "User: Hello, 世界! How are you?\n\nAssistant:"
    assert tok.encode(text, add_special_tokens=False) == WorldTokenizer().encode(text)


def test_hf_export_carries_the_runs_chat_template(tmp_path):
    from rwkvft.data.formats import Roles, record_segments, render
    from rwkvft.data.templates.jinja import jinja_template
    base, adapter, _, _ = write_pair(tmp_path, "lora", {"r": 4, "lora_alpha": 8}, **HF_SIZE)
    msgs = [{"role": "user", "content": "a\n\n\nb"}, {"role": "assistant", "content": "c\n\nd"}]
    cases = ((None, "g1"), ({"chat_template": "raw"}, "raw"), ({"loss_mask": "none"}, "raw"))
    for i, (saved, template) in enumerate(cases):
        if saved is not None:  # a run's train_config.json; one without chat_template predates templates
            (adapter.parent / "train_config.json").write_text(json.dumps(saved))
        out = tmp_path / f"hf{i}"
        assert export(base, adapter, "hf", out) == 0
        assert (out / "chat_template.jinja").read_text() == jinja_template(template)
        assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == jinja_template(template)
        tok = rwkv7_hf.RWKV7Tokenizer.from_pretrained(str(out))
        want = render(record_segments({"messages": msgs}, Roles(template=template))[0])
        assert tok.apply_chat_template(msgs, tokenize=False) == want


def test_hf_refuses_rwkv6_and_other_architectures_in_one_line(tmp_path, capsys):
    base, adapter, _, _ = write_pair(tmp_path, "miss", {"r": 8}, version="x060")
    before = snapshot(tmp_path)
    assert export(base, adapter, "hf", tmp_path / "hf") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RWKV-7 (x070) models only" in err[0] and "RWKV-6 (x060)" in err[0]
    assert snapshot(tmp_path) == before and not (tmp_path / "hf").exists()
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert main(["inspect", str(llama)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'llama' model" in err[0] and "RWKV-7" in err[0]
