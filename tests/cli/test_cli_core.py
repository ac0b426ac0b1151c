"""`rwkvft init`, `inspect` and `generate`, driven through rwkvft.cli.main."""
from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import available_ops

from rwkvft.checkpoint import read_state_dict, write_state_dict
from rwkvft.cli import main
from rwkvft.generation import stream_tokens
from rwkvft.data.tokenizer import WorldTokenizer
from rwkvft.models import load_model


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------------------------
# init

def test_init_writes_an_official_file(tmp_path, capsys):
    out = tmp_path / "tiny.pth"
    rc, stdout, _ = run_cli(capsys, "init", "--n_layer", 2, "--n_embd", 128, "--vocab_size", 300,
                            "--out", out)
    assert rc == 0 and "wrote" in stdout
    sd = torch.load(out, weights_only=True)
    assert len(sd) == 33 * 2 + 6 and all(t.dtype == torch.bfloat16 for t in sd.values())
    assert sd["emb.weight"].shape == (300, 128) and sd["blocks.1.att.v1"].shape == (128, 32)
    model = load_model(out)  # loads strictly into our model
    assert model.config.n_layer == 2


def test_init_is_deterministic_per_seed(tmp_path, capsys):
    paths = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        paths[name] = tmp_path / f"{name}.pth"
        assert run_cli(capsys, "init", "--n_layer", 2, "--n_embd", 64, "--vocab_size", 100,
                       "--seed", seed, "--out", paths[name])[0] == 0
    a, b, c = (read_state_dict(paths[n]) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"])


def test_init_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "exists.pth"
    out.write_bytes(b"my precious model")
    rc, _, err = run_cli(capsys, "init", "--n_layer", 2, "--n_embd", 64, "--vocab_size", 100,
                         "--out", out)
    assert rc == 2 and "exists.pth already exists; pass --force to overwrite it" in err
    assert out.read_bytes() == b"my precious model"
    rc, _, _ = run_cli(capsys, "init", "--n_layer", 2, "--n_embd", 64, "--vocab_size", 100,
                       "--out", out, "--force")
    assert rc == 0 and read_state_dict(out)["emb.weight"].shape == (100, 64)


@pytest.mark.parametrize("argv,message", [
    (["--n_layer", 1, "--n_embd", 64], "n_layer must be at least 2"),
    (["--n_layer", 2, "--n_embd", 100], "n_embd 100 must be a positive multiple of head_size 64"),
    (["--n_layer", 2, "--n_embd", 64, "--vocab_size", 0], "vocab_size must be positive")])
def test_init_bad_sizes_write_nothing(tmp_path, capsys, argv, message):
    rc, _, err = run_cli(capsys, "init", *argv, "--out", tmp_path / "m.pth")
    assert rc == 2 and f"rwkvft: error: {message}" in err
    assert os.listdir(tmp_path) == []


def test_init_out_is_a_directory(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "init", "--n_layer", 2, "--n_embd", 64, "--out", tmp_path)
    assert rc == 2 and "is a directory; give a file name" in err


# ---------------------------------------------------------------------------------------------
# inspect

def test_inspect_json_reports_the_file(make_checkpoint, capsys):
    path = make_checkpoint(n_layer=3, n_embd=128, vocab_size=512, layer0_v=False)
    rc, out, _ = run_cli(capsys, "inspect", path, "--json")
    info = json.loads(out)
    raw = torch.load(path, weights_only=True)
    assert rc == 0
    assert info == {
        "version": "x070", "n_layer": 3, "n_embd": 128, "head_size": 64, "n_head": 2,
        "vocab_size": 512, "dim_ffn": 512, "d_decay": raw["blocks.0.att.w1"].shape[1],
        "d_aaa": raw["blocks.0.att.a1"].shape[1], "d_mv": raw["blocks.1.att.v1"].shape[1],
        "d_gate": raw["blocks.0.att.g1"].shape[1], "layer0_v": False,
        "parameters": sum(t.numel() for t in raw.values()), "tensors": 33 * 3 + 3,
        "dtypes": ["float32"]}


def test_inspect_text(make_checkpoint, capsys):
    rc, out, _ = run_cli(capsys, "inspect", make_checkpoint(dtype=torch.bfloat16))
    assert rc == 0
    for line in ("version      x070 (RWKV-7)", "layers       2", "heads        2 x head size 64",
                 "vocab        512", "ffn          512", "layer-0 v0   present", "dtype        bfloat16",
                 "lora dims    decay 32, a 32, v 32, gate 32"):
        assert line in out


def test_inspect_describes_rwkv6_files_too(tmp_path, capsys):
    from test_checkpoint import v6_state_dict
    path = write_state_dict(v6_state_dict(), tmp_path / "v6.pth")
    rc, out, _ = run_cli(capsys, "inspect", path, "--json")
    info = json.loads(out)
    assert rc == 0 and (info["version"], info["d_decay"], info["d_mix"], info["dim_ffn"]) == \
        ("x060", 64, 32, 224)


def test_inspect_bad_path(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "inspect", tmp_path / "missing.pth")
    assert rc == 2 and "checkpoint not found" in err


# ---------------------------------------------------------------------------------------------
# generate

@pytest.fixture(scope="module")
def world_model(make_checkpoint):
    return make_checkpoint(n_layer=2, n_embd=64, vocab_size=65536, seed=11)


def test_generate_is_deterministic_per_seed(world_model, capsys):
    argv = ["generate", "--model", world_model, "--prompt", "The quick brown fox", "--max_tokens", 12,
            "--seed", 3, "--op", "reference"]
    rc, first, _ = run_cli(capsys, *argv)
    rc2, second, _ = run_cli(capsys, *argv)
    assert rc == rc2 == 0 and first == second and first.endswith("\n")
    assert len(first) > 1  # a random model emits some text (id 0 is one of 65536 choices)


@pytest.mark.parametrize("op", available_ops())
def test_generate_steps_match_the_full_sequence_forward(world_model, op):
    model = load_model(world_model)
    model.set_runtime(op=op)
    prompt = WorldTokenizer().encode("Hello, world")
    steps = list(stream_tokens(model, prompt, max_tokens=6, temperature=1.0, top_p=0.9, seed=1))
    generated = [t for t, _ in steps]
    with torch.no_grad():
        full = model(torch.tensor([prompt + generated]))[0]
    for i, (_, logits) in enumerate(steps):
        ref = full[len(prompt) - 1 + i]
        assert (logits - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_generate_stops_at_end_of_text(world_model, tmp_path, capsys):
    sd = read_state_dict(world_model)
    # constant final features h = ln_out.bias, and a head row 0 aligned with it: id 0 always wins
    sd["ln_out.weight"] = torch.zeros(64)
    sd["ln_out.bias"] = torch.ones(64)
    sd["head.weight"] = sd["head.weight"].clone()  # the fixture file is shared: never write into it
    sd["head.weight"][0] = 100.0
    path = write_state_dict(sd, tmp_path / "eod.pth", dtype=torch.float32)
    model = load_model(path)
    model.set_runtime(op="reference")
    assert list(stream_tokens(model, [1, 2, 3], max_tokens=5)) == []
    rc, out, _ = run_cli(capsys, "generate", "--model", path, "--prompt", "hi", "--op", "reference")
    assert rc == 0 and out == "\n"


def test_generate_streams_multibyte_text_whole(world_model, capsys):
    """Greedy text equals decoding the generated ids in one go (the stream decoder holds bytes)."""
    rc, out, _ = run_cli(capsys, "generate", "--model", world_model, "--prompt", "日本", "--max_tokens", 8,
                         "--temperature", 0, "--op", "reference")
    model = load_model(world_model)
    model.set_runtime(op="reference")
    tok = WorldTokenizer()
    ids = [t for t, _ in stream_tokens(model, tok.encode("日本"), 8, temperature=0)]
    assert rc == 0 and out == tok.decode(ids) + "\n"


@pytest.mark.parametrize("flag,value,message", [
    ("--temperature", -1, "--temperature must be >= 0"),
    ("--top_p", 0, "--top_p must be in (0, 1]"),
    ("--top_p", 1.5, "--top_p must be in (0, 1]"),
    ("--max_tokens", -2, "--max_tokens must be >= 0")])
def test_generate_bad_arguments(world_model, capsys, flag, value, message):
    rc, _, err = run_cli(capsys, "generate", "--model", world_model, "--prompt", "x", flag, value)
    assert rc == 2 and message in err


def test_generate_needs_world_vocab(make_checkpoint, capsys):
    rc, _, err = run_cli(capsys, "generate", "--model", make_checkpoint(), "--prompt", "x")
    assert rc == 2 and "needs a World-vocabulary model (vocab 65536)" in err and "has vocab 512" in err
