"""Issue 30, item 6: every command that reads a model reads every model format we write —
`merge --format pth|safetensors|st` and `export --format hf` (fla and native layouts) — through
the one format registry: generate, eval, inspect, merge --base and train --load_model."""
from __future__ import annotations

import json

import pytest
import torch

from rwkvft.adapters import adapter_state_dict, inject, parse_peft
from rwkvft.cli import main
from rwkvft.formats import fingerprint, load_model, read_model, save_adapter

OUTPUTS = {"pth": ["merge", "--format", "pth"], "safetensors": ["merge", "--format", "safetensors"],
           "st": ["merge", "--format", "st"], "hf": ["export", "--format", "hf"],
           "hf-native": ["export", "--format", "hf", "--layout", "native"]}
NAMES = {"pth": "m.pth", "safetensors": "m.safetensors", "st": "m.st", "hf": "m_hf", "hf-native": "m_native"}


@pytest.fixture(scope="module")
def written(make_checkpoint, tmp_path_factory):
    """A base, a MiSS adapter trained-looking (random), and the merged model in every format."""
    d = tmp_path_factory.mktemp("formats")
    base = make_checkpoint(n_layer=2, n_embd=128, vocab_size=65536, seed=3, dtype=torch.bfloat16)
    base_sd = read_model(base)
    model = load_model(base)
    names = inject(model, parse_peft("miss", {"r": 8}), [])
    torch.manual_seed(0)
    with torch.no_grad():
        for n in names:
            model.get_parameter(n).add_(torch.randn_like(model.get_parameter(n)) * 0.05)
    config = dict(names.config.to_dict(), base=fingerprint(base_sd))
    adapter = save_adapter(d / "run" / "rwkv-1.pth", adapter_state_dict(model, names), config,
                           config["base"])
    data = d / "chat.jsonl"
    data.write_text("".join(json.dumps({"text": f"User: hi {i}\n\nAssistant: hello {i}."}) + "\n"
                            for i in range(8)), encoding="utf-8")
    paths = {}
    for fmt, argv in OUTPUTS.items():
        out = d / NAMES[fmt]
        assert main([argv[0], "--base", str(base), "--adapter", str(adapter), "--output", str(out),
                     *argv[1:]]) == 0
        paths[fmt] = out
    return {"base": base, "adapter": adapter, "data": data, "paths": paths, "dir": d}


@pytest.mark.parametrize("fmt", list(OUTPUTS))
def test_inspect_reads_it(capsys, written, fmt):
    capsys.readouterr()
    assert main(["inspect", str(written["paths"][fmt]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_layer"] == 2 and info["n_embd"] == 128 and info["vocab_size"] == 65536


def _eval_loss(capsys, model, data) -> float:
    capsys.readouterr()
    assert main(["eval", "--model", str(model), "--data_file", str(data), "--ctx_len", "32",
                 "--json", "--progress", "0"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"]


@pytest.mark.parametrize("fmt", list(OUTPUTS))
def test_eval_reads_it_and_scores_the_same_model(capsys, written, fmt):
    loss = _eval_loss(capsys, written["paths"][fmt], written["data"])
    ref = _eval_loss(capsys, written["paths"]["pth"], written["data"])
    # every writer rounds the same merged weights: bf16 (pth, safetensors, hf) or fp16 (st)
    assert loss == pytest.approx(ref, abs=0.02 if fmt == "st" else 1e-4)


@pytest.mark.parametrize("fmt", list(OUTPUTS))
def test_generate_reads_it(capsys, written, fmt):
    capsys.readouterr()
    assert main(["generate", "--model", str(written["paths"][fmt]), "--prompt", "User: hi",
                 "--max_tokens", "2", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("fmt", list(OUTPUTS))
def test_merge_reads_it_as_the_base(capsys, written, fmt, tmp_path):
    out = tmp_path / "again.pth"
    assert main(["merge", "--base", str(written["paths"][fmt]), "--adapter",
                 str(written["adapter"]), "--output", str(out)]) == 0
    keys, base_keys = set(read_model(out)), set(read_model(written["base"]))
    # the fla layout leaves out layer 0's unused v0/v1/v2: nothing else may differ
    assert keys <= base_keys and base_keys - keys <= {f"blocks.0.att.v{i}" for i in range(3)}


@pytest.mark.parametrize("fmt", list(OUTPUTS))
def test_train_reads_it_as_load_model(capsys, written, fmt, tmp_path):
    assert main(["train", "--load_model", str(written["paths"][fmt]), "--data_file",
                 str(written["data"]), "--proj_dir", str(tmp_path / "run"), "--ctx_len", "32",
                 "--micro_bsz", "2", "--epoch_steps", "1", "--accelerator", "cpu",
                 "--progress", "0", "--peft_config", '{"r":8}']) == 0
    assert (tmp_path / "run" / "rwkv-0.pth").is_file()
