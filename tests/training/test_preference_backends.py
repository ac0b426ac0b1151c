"""DPO on a quantised base (--quant nf4|int8, bitsandbytes' CPU backend) and under DeepSpeed (the
tutorial's deepspeed_stage_1 + bf16 + nf4 path, 2 processes on CPU through the test-only launcher
ds_cpu_launch.py): a few steps, finite metrics, the adapter saved, ranks agreeing."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rwkvft.cli import main
from rwkvft.data import preference as pref_data

SAMPLE = Path(pref_data.__file__).parent / "sample" / "preference.jsonl"
METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
           "logps/chosen", "logps/rejected")
REPO = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("ds_cpu_launch.py")
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                               reason="the quant extra (bitsandbytes) is not installed")


@pytest.fixture(scope="module")
def world_tiny(make_checkpoint):
    return make_checkpoint(n_layer=2, n_embd=64, vocab_size=65536, seed=4)


def _flags(model, proj, **over) -> list[str]:
    flags = {"load_model": model, "proj_dir": proj, "data_file": SAMPLE, "objective": "dpo",
             "peft": "miss", "peft_config": '{"r":16}', "ctx_len": 48, "micro_bsz": 2,
             "epoch_steps": 3, "epoch_count": 1, "lr_init": 1e-3, "accelerator": "cpu",
             "precision": "fp32", "progress": 0}
    flags.update(over)
    return [x for k, v in flags.items() for x in (f"--{k}", str(v))]


def _rows(proj: Path) -> list[dict]:
    return [json.loads(l) for l in (proj / "loss.jsonl").read_text().splitlines()]


def _check_run(proj: Path, steps: int, full: bool = False) -> list[dict]:
    rows = _rows(proj)
    assert len(rows) == steps
    for r in rows:
        assert all(math.isfinite(r[k]) for k in METRICS), r
    adapter = torch.load(proj / "rwkv-0.pth", weights_only=True)
    assert adapter and all(k.endswith(".miss") or full for k in adapter)
    assert all(torch.isfinite(t).all() for t in adapter.values())
    assert any(t.abs().sum() > 0 for t in adapter.values())   # it trained
    return rows


@needs_bnb
@pytest.mark.parametrize("quant,precomputed", [("nf4", False), ("int8", True)])
def test_dpo_on_a_quantised_base(world_tiny, tmp_path, quant, precomputed):
    """On the fly, the reference is the quantised base with the adapters off, so the first step's
    policy IS the reference (margin exactly 0); with --ref_logps it is the full-precision base."""
    over = {"quant": quant}
    if precomputed:
        data, ref = _prepared(world_tiny, tmp_path)
        over.update(data_file=data, ref_logps=ref)
    proj = tmp_path / "run"
    assert main(["train", *_flags(world_tiny, proj, **over)]) == 0
    rows = _check_run(proj, 3)
    assert f"quant: {quant} base weights" in (proj / "train_log.txt").read_text()
    if precomputed:   # the quantised policy differs from the float reference, a little
        assert rows[0]["rewards/margins"] != 0.0 and abs(rows[0]["rewards/margins"]) < 1.0
    else:
        assert rows[0]["rewards/margins"] == 0.0


def _prepared(model, tmp_path) -> tuple[Path, Path]:
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(SAMPLE.read_bytes())
    assert main(["prepare", "--ref_logps", "--input", str(data), "--load_model", str(model),
                 "--ctx_len", "48", "--quiet"]) == 0
    return data, tmp_path / "pairs.jsonl.ref_logps.safetensors"


@pytest.mark.parametrize("case", ["stage_1_miss_nf4", "stage_2_full_ref_logps"])
def test_dpo_under_deepspeed_bf16(world_tiny, tmp_path, case):
    """The tutorial's flags (ZeRO-1, bf16, MiSS on an nf4 base), and full fine-tuning under ZeRO-2
    with precomputed reference log-probs (no frozen copy of the model on any rank)."""
    pytest.importorskip("deepspeed")
    if case == "stage_1_miss_nf4":
        if importlib.util.find_spec("bitsandbytes") is None:
            pytest.skip("the quant extra (bitsandbytes) is not installed")
        over = {"strategy": "deepspeed_stage_1", "quant": "nf4"}
    else:
        data, ref = _prepared(world_tiny, tmp_path)
        over = {"strategy": "deepspeed_stage_2", "peft": "none", "peft_config": "{}", "lr_init": 1e-4,
                "data_file": data, "ref_logps": ref}
    proj = tmp_path / "ds"
    argv = _flags(world_tiny, proj, precision="bf16", devices=2, micro_bsz=1, **over)
    r = subprocess.run([sys.executable, str(LAUNCHER), "train", *argv], cwd=REPO, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    _check_run(proj, 3, full=over.get("peft") == "none")
    log = (proj / "train_log.txt").read_text()
    sums = json.loads(log.split("adapter checksum per rank: ")[-1].splitlines()[0])
    assert len(sums) == 2 and sums[0] == sums[1] != 0.0
