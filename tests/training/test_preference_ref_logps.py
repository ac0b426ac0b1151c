"""`rwkvft prepare --ref_logps` and `train --objective dpo --ref_logps FILE`: the precomputed
reference gives the on-the-fly reference's losses; every mismatch is one error line before the
model is loaded (the base's, before it is built); nothing the user has changes; the write is atomic."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from rwkvft.cli import main
from rwkvft.data import preference as pref_data

from preference_helpers import CTX, SAMPLE, dpo_argv, loss_rows as _rows


@pytest.fixture(scope="module")
def world_tiny(make_checkpoint):
    return make_checkpoint(n_layer=2, n_embd=64, vocab_size=65536, seed=4)


@pytest.fixture(scope="module")
def other_base(make_checkpoint):
    return make_checkpoint(n_layer=2, n_embd=64, vocab_size=65536, seed=5)


@pytest.fixture(scope="module")
def prepared(world_tiny, tmp_path_factory):
    """(data file, its ref_logps file) in a folder of their own: the sample copied, then prepared."""
    folder = tmp_path_factory.mktemp("refdata")
    data = folder / "pairs.jsonl"
    data.write_bytes(SAMPLE.read_bytes())
    assert main(["prepare", "--ref_logps", "--input", str(data), "--load_model", str(world_tiny),
                 "--ctx_len", str(CTX), "--micro_bsz", "3", "--quiet"]) == 0
    return data, folder / "pairs.jsonl.ref_logps.safetensors"


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_the_file_holds_sums_token_counts_and_identities(prepared, world_tiny):
    from safetensors import safe_open

    from rwkvft.adapters.fingerprint import fingerprint
    from rwkvft.data.preference import read_pairs
    from rwkvft.formats import load_model, read_state_dict
    from rwkvft.training.pair_logps import full_sequence_logps
    data, ref = prepared
    with safe_open(str(ref), framework="pt") as f:
        info = json.loads(f.metadata()["rwkvft"])
        t = {k: f.get_tensor(k) for k in f.keys()}
    pairs, _ = read_pairs(str(data), CTX)
    assert info["pairs"] == len(pairs) == 20 and info["reduction"].startswith("sum over answer tokens")
    assert info["base"] == fingerprint(read_state_dict(world_tiny))
    assert info["data"] == {"name": "pairs.jsonl", "size": data.stat().st_size, "sha256": _sha(data)}
    assert info["render"] == {"ctx_len": CTX, "chat_template": "g1", "user_role": "User",
                              "assistant_role": "Assistant", "system_role": "System", "train_on_think": True}
    assert t["chosen_tokens"].tolist() == [len(p.chosen) for p in pairs]
    # the sums are the base model's full-sequence log-probs (an independent path, one pair at a time)
    model = load_model(world_tiny)
    for i in (0, 7, 19):
        with torch.no_grad():
            lp = full_sequence_logps(model, pref_data.collate_pairs([pairs[i]]))
        assert float(t["chosen_logps"][i]) == pytest.approx(float(lp.chosen[0]), abs=1e-4)
        assert float(t["rejected_logps"][i]) == pytest.approx(float(lp.rejected[0]), abs=1e-4)


@pytest.mark.parametrize("peft,config", [("miss", '{"r":16}'), ("none", "{}")])
def test_precomputed_reference_gives_the_on_the_fly_losses(prepared, world_tiny, tmp_path, peft, config):
    """MiSS (adapters off) and full fine-tuning (a frozen copy) against the file: the same loss
    and metrics at every step within 1e-6 (--val_split's pairs carry their values too)."""
    data, ref = prepared
    fly, pre = tmp_path / "fly", tmp_path / "pre"
    over = {"peft": peft, "peft_config": config, "lr_init": 1e-4 if peft == "none" else 1e-3,
            "val_split": 0.2}
    assert main(dpo_argv(world_tiny, fly, data, **over)) == 0
    assert main(dpo_argv(world_tiny, pre, data, ref_logps=ref, **over)) == 0
    a, b = _rows(fly), _rows(pre)
    assert len(a) == len(b) == 4   # 3 steps + 1 validation
    assert any(r["rewards/margins"] != 0 for r in a[1:])   # the policy moved: a real comparison
    for x, y in zip(a, b, strict=True):
        for k in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
            assert x[k] == pytest.approx(y[k], abs=1e-6), (k, x, y)
    assert json.loads((pre / "train_config.json").read_text())["ref_logps"] == str(ref)
    assert "reference log-probs precomputed (--ref_logps)" in (pre / "train_log.txt").read_text()


# ---------- refusals: one line, before the model is loaded, nothing written ----------
def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rwkvft: error: "), err
    return err[0]


def test_refusals(capsys, prepared, world_tiny, other_base, tmp_path):
    data, ref = prepared
    before = {p: _sha(p) for p in (data, ref, world_tiny)}
    missing = tmp_path / "no-model.pth"   # the data/flag refusals come before the base is read
    proj = tmp_path / "run"
    other = tmp_path / "pairs.jsonl"
    other.write_text(data.read_text().replace("Velmora", "Velmara"))
    cases = [
        (dpo_argv(missing, proj, other, ref_logps=ref), "was computed for another data file (pairs.jsonl"),
        (dpo_argv(missing, proj, data, ref_logps=ref, ctx_len=64), "computed with --ctx_len 48, this run has --ctx_len 64"),
        (dpo_argv(missing, proj, data, ref_logps=ref, chat_template="raw"),
         "computed with --chat_template 'g1', this run has --chat_template 'raw'"),
        (dpo_argv(missing, proj, data, ref_logps=ref, user_role="Q"), "--user_role 'User', this run has --user_role 'Q'"),
        (dpo_argv(missing, proj, data, ref_logps=ref, objective="simpo"), "which --objective simpo does not use"),
        (dpo_argv(missing, proj, data, ref_logps=ref, adapter_init=missing), "--adapter_init starts the policy"),
        (dpo_argv(missing, proj, data, ref_logps=ref, val_file=data), "hold out pairs with --val_split"),
        (dpo_argv(missing, proj, data, ref_logps=tmp_path / "none.safetensors"), "none.safetensors not found"),
        (dpo_argv(missing, proj, data, ref_logps=data), "is not a reference log-prob file"),
        (dpo_argv(other_base, proj, data, ref_logps=ref), "holds the log-probs of another base model (checksum"),
    ]
    for argv, needle in cases:
        assert needle in _error(capsys, argv), needle
    assert not proj.exists()
    assert {p: _sha(p) for p in before} == before


def test_prepare_refuses_to_overwrite_and_writes_atomically(capsys, prepared, world_tiny, tmp_path, monkeypatch):
    data, ref = prepared
    kept = _sha(ref)
    argv = ["prepare", "--ref_logps", "--input", str(data), "--load_model", str(world_tiny),
            "--ctx_len", str(CTX), "--quiet"]
    assert "already exists; pass --force" in _error(capsys, argv)
    assert "needs --load_model" in _error(capsys, argv[:4] + argv[6:])
    assert "--output PREFIX is required" in _error(capsys, ["prepare", "--input", str(data)])  # binidx mode
    import safetensors.torch

    def full_disk(tensors, path, metadata=None):
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    assert "the disk is full" in _error(capsys, argv + ["--force"])
    assert _sha(ref) == kept   # the old file intact, no temporary left
    assert sorted(p.name for p in ref.parent.iterdir()) == ["pairs.jsonl", ref.name]


def test_a_state_prompted_at_init_base_is_refused(capsys, prepared, world_tiny, tmp_path):
    """Its own reference is the prompted state, not the base the file holds (known after the
    model is built: one line, no adapter, no log rows)."""
    data, ref = prepared
    proj = tmp_path / "state"
    argv = dpo_argv(world_tiny, proj, data, ref_logps=ref, peft="state",
                  peft_config='{"init": "base", "prompt": "You are kind."}')
    assert "policy starts elsewhere (its reference is its starting state)" in _error(capsys, argv)
    assert not list(proj.glob("rwkv-*")) and not (proj / "loss.jsonl").exists()


def test_resume_mid_epoch_with_precomputed_reference(prepared, world_tiny, tmp_path):
    """The values ride with their pairs: a stop after 2 steps and --resume give the uninterrupted
    adapter (within 1e-6) and the same metrics."""
    data, ref = prepared
    full, part = tmp_path / "full", tmp_path / "part"
    over = {"epoch_steps": 4, "save_every_steps": 2, "ref_logps": ref}
    assert main(dpo_argv(world_tiny, full, data, **over)) == 0
    assert main(dpo_argv(world_tiny, part, data, max_steps=2, **over)) == 0
    assert main(dpo_argv(world_tiny, part, data, **over) + ["--resume"]) == 0
    a = torch.load(full / "rwkv-0.pth", weights_only=True)
    b = torch.load(part / "rwkv-0.pth", weights_only=True)
    assert set(a) == set(b) and all((a[k] - b[k]).abs().max() <= 1e-6 for k in a)
    for x, y in zip(_rows(full), _rows(part), strict=True):
        assert x["rewards/margins"] == pytest.approx(y["rewards/margins"], abs=1e-6)
