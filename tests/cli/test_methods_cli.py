"""Methods end to end through the public CLI: a throw-away method registered at test time,
full fine-tuning (`--peft none`), and the seeded first losses of a MiSS run."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from method_cases import ROWSCALE
from rwkvft.adapters import inject, load_adapter_state, registry
from rwkvft.adapters.config import AdapterConfig
from rwkvft.formats import load_model, read_adapter, read_state_dict, unmerge_state_dict
from rwkvft.cli import main


def _flags(model, proj, data, **over):
    flags = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "numpy",
             "ctx_len": 32, "micro_bsz": 2, "epoch_steps": 4, "epoch_count": 2, "lr_init": 1e-2,
             "lr_final": 1e-3, "warmup_steps": 0, "accelerator": "cpu", "precision": "fp32",
             "random_seed": 7, "progress": 0}
    flags.update(over)
    return [x for k, v in flags.items() for x in (f"--{k}", str(v))]


def _losses(proj):
    return [json.loads(line)["loss"] for line in (proj / "loss.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- a throw-away method
@pytest.fixture
def rowscale():
    registry.register(ROWSCALE)
    yield ROWSCALE
    registry.unregister("rowscale")


def test_registered_method_trains_saves_merges_and_unmerges(rowscale, small_model, tokens_npy,
                                                            tmp_path, capsys):
    proj = tmp_path / "run"
    assert main(["train", *_flags(small_model, proj, tokens_npy, peft="rowscale")]) == 0
    losses = _losses(proj)
    assert losses[-1] < losses[0]
    adapter_sd, config = read_adapter(proj / "rwkv-1.pth")
    assert config["method"] == "rowscale"
    assert sorted({k.rpartition(".")[2] for k in adapter_sd}) == ["rowscale"]
    assert len(adapter_sd) == 2 * 6                     # 2 layers x 6 default RWKV-7 targets
    merged_path = tmp_path / "merged.pth"
    assert main(["merge", "--base", str(small_model), "--adapter", str(proj / "rwkv-1.pth"),
                 "--output", str(merged_path), "--dtype", "fp32"]) == 0
    assert "merged rowscale adapter (12 layers" in capsys.readouterr().out
    # the merged model computes what the base + adapter computes
    idx = torch.tensor([list(range(1, 30))])
    adapted = load_model(small_model)
    inject(adapted, AdapterConfig(method="rowscale", r=1))
    load_adapter_state(adapted, adapter_sd)
    with torch.no_grad():
        torch.testing.assert_close(load_model(merged_path)(idx), adapted(idx), atol=1e-4, rtol=1e-4)
    # and unmerging gives the base back
    base_sd = read_state_dict(small_model)
    restored = unmerge_state_dict(read_state_dict(merged_path), adapter_sd, config)
    for k in base_sd:
        torch.testing.assert_close(restored[k].float(), base_sd[k].float(), atol=1e-5, rtol=1e-5)


def test_unregistered_method_is_refused(small_model, tokens_npy, tmp_path, capsys):
    assert main(["train", *_flags(small_model, tmp_path / "r", tokens_npy, peft="rowscale")]) == 2
    assert "--peft 'rowscale' is not supported; choose one of miss, lora, pissa, none" in capsys.readouterr().err


# ---------------------------------------------------------------- --peft none
def _pip_loss(pip_model, tokens) -> float:
    logits, _ = pip_model.forward(tokens[:-1], None, full_output=True)
    return float(F.cross_entropy(logits.float(), torch.tensor(tokens[1:])))


def test_full_finetune_saves_an_official_model(small_model, tokens_npy, tmp_path, pip_rwkv):
    import numpy as np
    proj = tmp_path / "full"
    assert main(["train", *_flags(small_model, proj, tokens_npy, peft="none", lr_init=3e-3,
                                  lr_final=3e-3)]) == 0
    saved = torch.load(proj / "rwkv-1.pth", weights_only=True)
    base = read_state_dict(small_model)
    assert list(saved) == list(base)
    assert all(saved[k].shape == base[k].shape for k in base)
    assert json.loads((proj / "adapter_config.json").read_text())["method"] == "none"
    text = np.load(tokens_npy)[:97 * 2].tolist()
    base_loss, tuned_loss = _pip_loss(pip_rwkv(small_model), text), _pip_loss(pip_rwkv(proj / "rwkv-1.pth"), text)
    assert math.isfinite(tuned_loss) and tuned_loss < base_loss - 0.1


def test_full_finetune_memory_note():
    from rwkvft.adapters.full import memory_note
    note = memory_note(1_500_000_000, "auto")
    assert "22.4 GiB" in note and "deepspeed_stage_2" in note
    assert "to fit it" not in memory_note(1_500_000_000, "deepspeed_stage_3")


# ---------------------------------------------------------------- numerics guard
# First losses of a seeded MiSS run (small_model, tokens_npy, seed 7, fp32, CPU), recorded
# when this test was written. Tolerance: 1e-4 absolute, far above run-to-run CPU noise
# (~1e-6) and far below what any change to the model, the loss, the data order or the
# optimizer moves them by (>1e-3), so an accidental numerics change fails here.
MISS_FIRST_LOSSES = [6.197471618652344, 4.977877616882324, 5.143596649169922, 4.562776565551758]


def test_seeded_run_reproduces_stored_first_losses(small_model, tokens_npy, tmp_path):
    proj = tmp_path / "seeded"
    assert main(["train", *_flags(small_model, proj, tokens_npy, peft="miss",
                                  peft_config='{"r": 8}', epoch_count=1)]) == 0
    got = _losses(proj)[:4]
    assert got == pytest.approx(MISS_FIRST_LOSSES, abs=1e-4)
