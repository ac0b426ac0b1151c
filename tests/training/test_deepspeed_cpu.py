"""The real `rwkvft train` under DeepSpeed ZeRO 1/2/3: 2 processes on CPU (gloo), through the
test-only launcher ds_cpu_launch.py (--accelerator cpu standing in for gpu). Issue 24's D1-D6.

Seven runs in all (each 30-170 s); the first five are shared by the tests through module fixtures:
- the tutorial's miss.sh flags (deepspeed_stage_1, bf16, MiSS, --quant nf4): two epoch saves,
  stop (--my_exit), --resume with --merge_output, then `rwkvft merge`;
- ZeRO-3 in fp32 with an adapter tensor over DeepSpeed's 1e5-element persistence threshold,
  --accumulate_grad_batches 2 and --adam_eps 1 (Adam's step then follows the gradient's scale),
  stopped after epoch 0 and resumed; against the same flags uninterrupted under plain DDP;
- ZeRO-2 bf16 with PiSSA, and with state tuning.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed")

from rwkvft.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("ds_cpu_launch.py")


def _flags(model, proj, data, **over) -> list[str]:
    flags = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "numpy",
             "ctx_len": 32, "micro_bsz": 2, "epoch_steps": 4, "epoch_count": 2, "epoch_save": 1,
             "lr_init": 1e-2, "lr_final": 1e-2, "accelerator": "cpu", "devices": 2,
             "progress": 0}
    flags.update(over)
    return [x for k, v in flags.items() for x in (f"--{k}", str(v))]


def _train(argv: list[str], deepspeed: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(LAUNCHER), "train"] if deepspeed else \
        [sys.executable, "-m", "rwkvft", "train"]
    r = subprocess.run([*cmd, *argv], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    return r


def _losses(proj: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (proj / "loss.jsonl").read_text().splitlines()
            if json.loads(line).get("kind", "train") == "train"]


def _adapter(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _model_states(proj: Path) -> dict:
    folder = proj / "last.ckpt" / "checkpoint"
    name = next(folder.glob("*model_states.pt"))
    return torch.load(name, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- the tutorial's flags
TUTORIAL = {"strategy": "deepspeed_stage_1", "precision": "bf16", "peft": "miss",
            "peft_config": '{"r":16}', "quant": "nf4", "epoch_count": 3}


@pytest.fixture(scope="module")
def tutorial(small_model, tokens_npy, tmp_path_factory):
    """miss.sh's flags: epochs 0 and 1 saved (two last.ckpt saves), stop, resume to epoch 2
    with --merge_output."""
    proj = tmp_path_factory.mktemp("ds1") / "miss"
    merged = proj.parent / "merged.pth"
    _train(_flags(small_model, proj, tokens_npy, my_exit=2, **TUTORIAL))
    first = {"files": sorted(p.name for p in proj.iterdir()), "losses": _losses(proj),
             "states": _model_states(proj)}
    _train(_flags(small_model, proj, tokens_npy, **TUTORIAL) + ["--resume", "--merge_output", str(merged)])
    return proj, merged, first


def test_tutorial_flags_train_save_twice_resume_and_merge(tutorial, small_model, tmp_path):
    proj, merged, first = tutorial
    assert {"rwkv-0.pth", "rwkv-1.pth", "last.ckpt"} <= set(first["files"])  # D2: second save
    assert (proj / "rwkv-2.pth").exists() and merged.exists()                  # D3: resumed
    losses = _losses(proj)
    assert len(losses) == 3 * 4 and losses[:8] == first["losses"]  # 4 steps an epoch, log kept
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] - 1.0
    adapters = [_adapter(proj / f"rwkv-{e}.pth") for e in range(3)]
    for a in adapters:  # D1: MiSS under bf16 trained, non-empty, moving
        assert a and all(t.numel() > 0 and torch.isfinite(t).all() for t in a.values())
    assert any(not torch.equal(adapters[1][k], adapters[2][k]) for k in adapters[2])
    # `rwkvft merge` of the result equals the run's own --merge_output
    out = tmp_path / "m.pth"
    assert main(["merge", "--base", str(small_model), "--adapter", str(proj / "rwkv-2.pth"),
                 "--output", str(out)]) == 0
    a, b = (torch.load(p, weights_only=True) for p in (out, merged))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    base = torch.load(small_model, weights_only=True)
    assert not torch.equal(a["blocks.0.att.key.weight"], base["blocks.0.att.key.weight"].bfloat16())


def test_deepspeed_last_ckpt_holds_only_the_trainable_state(tutorial):
    """D6: no frozen base in last.ckpt; its size is bounded by the trainable state."""
    proj, _, first = tutorial
    trainable = first["states"]["rwkvft_trainable"]
    for states in (first["states"], _model_states(proj)):
        assert set(states["module"]) == {f"model.{n}" for n in trainable}
    n = sum(t.numel() for t in _adapter(proj / "rwkv-2.pth").values())
    size = sum(p.stat().st_size for p in (proj / "last.ckpt").rglob("*") if p.is_file())
    # fp32 master + 2 Adam moments (over both ranks' shards), the bf16 module copy, and
    # DeepSpeed's two helper scripts (~41 KB)
    assert size <= n * (3 * 4 + 2) + 128 * 1024, size


# ---------------------------------------------------------------- ZeRO-3 and G=2 vs DDP
# LoRA r=256 makes blocks.N.ffn.value.lora_A (256, 512): 131,072 elements, over ZeRO-3's
# 1e5 persistence threshold, so DeepSpeed keeps it in shards.
EXACT = {"peft": "lora", "peft_config": '{"r":256,"lora_alpha":256}', "precision": "fp32",
         "accumulate_grad_batches": 2, "adam_eps": 1, "lr_init": 3e-3, "lr_final": 3e-3}


@pytest.fixture(scope="module")
def zero3_vs_ddp(small_model, tokens_npy, tmp_path_factory):
    root = tmp_path_factory.mktemp("ds3")
    ddp, ds = root / "ddp", root / "ds3"
    _train(_flags(small_model, ddp, tokens_npy, strategy="ddp", **EXACT), deepspeed=False)
    _train(_flags(small_model, ds, tokens_npy, strategy="deepspeed_stage_3", my_exit=1, **EXACT))
    _train(_flags(small_model, ds, tokens_npy, strategy="deepspeed_stage_3", **EXACT) + ["--resume"])
    return ddp, ds


def test_zero3_with_accumulation_and_resume_equals_ddp(zero3_vs_ddp):
    """D4 (ZeRO-3 saves whole adapters), D5 (G=2 gradients scaled once), D3 (resume), D2."""
    ddp, ds = zero3_vs_ddp
    assert _losses(ds) == pytest.approx(_losses(ddp), rel=1e-5, abs=1e-5)
    for epoch in (0, 1):
        a, b = _adapter(ds / f"rwkv-{epoch}.pth"), _adapter(ddp / f"rwkv-{epoch}.pth")
        assert set(a) == set(b)
        big = a["blocks.1.ffn.value.lora_A"]
        assert big.shape == (256, 512)
        for k in a:
            assert a[k].shape == b[k].shape, k
            assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), \
                (k, float((a[k] - b[k]).abs().max()))
    log = (ds / "train_log.txt").read_text()
    sums = json.loads(log.split("adapter checksum per rank: ")[-1].splitlines()[0])
    assert len(sums) == 2 and sums[0] == sums[1] != 0.0


# ---------------------------------------------------------------- the other methods in bf16
@pytest.mark.parametrize("peft,config", [("pissa", '{"r":8}'), ("state", "{}")])
def test_zero2_bf16_trains_pissa_and_state(small_model, tokens_npy, tmp_path, peft, config):
    """D1 for the other methods (LoRA: PiSSA is LoRA with an SVD start; the LoRA forward runs
    in fp32 in the ZeRO-3 run above, and with bf16 parameters in test_adapter_dtype.py)."""
    proj = tmp_path / peft
    _train(_flags(small_model, proj, tokens_npy, strategy="deepspeed_stage_2", precision="bf16",
                  peft=peft, peft_config=config, epoch_count=1, epoch_steps=6))
    losses = _losses(proj)
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-2:]) < losses[0]
    a = _adapter(proj / "rwkv-0.pth")
    assert a and all(t.numel() > 0 and torch.isfinite(t).all() for t in a.values())
