"""`rwkvft train --compile`: a run resumed across eager and compiled blocks continues the same
run (same adapter as one uninterrupted eager run), and the compile time is printed.

Compiled with the `aot_eager` backend (tests/models/test_compile.py says why; the inductor case
is there)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning  # noqa: F401  imported at collection: its log handler binds the session's stderr
import pytest
import torch

from rwkvft.cli import main

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.compile


def _flags(model, proj, data, *extra, **over):
    flags = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "numpy",
             "ctx_len": 32, "micro_bsz": 2, "epoch_steps": 2, "epoch_count": 2, "lr_init": 1e-2,
             "lr_final": 1e-3, "accelerator": "cpu", "precision": "fp32",
             "peft": "miss", "peft_config": '{"r":8}', "progress": 0}
    flags.update(over)
    return ["train", *[x for k, v in flags.items() for x in (f"--{k}", str(v))], *extra]


@pytest.fixture(scope="module")
def eager_run(small_model, tokens_npy, tmp_path_factory):
    proj = tmp_path_factory.mktemp("eager") / "run"
    assert main(_flags(small_model, proj, tokens_npy)) == 0
    return torch.load(proj / "rwkv-1.pth", weights_only=True)


@pytest.mark.parametrize("first, then", [((), ("--compile",)), (("--compile",), ())],
                         ids=["eager-then-compiled", "compiled-then-eager"])
def test_resume_across_compile(monkeypatch, capsys, small_model, tokens_npy, eager_run, tmp_path,
                               first, then):
    monkeypatch.setattr("rwkvft.models.compile.BACKEND", "aot_eager")
    proj = tmp_path / "run"
    assert main(_flags(small_model, proj, tokens_npy, *first, my_exit=1)) == 0
    assert not (proj / "rwkv-1.pth").exists()
    assert main(_flags(small_model, proj, tokens_npy, *then, "--resume")) == 0
    resumed = torch.load(proj / "rwkv-1.pth", weights_only=True)
    assert set(resumed) == set(eager_run)
    for k in eager_run:
        assert torch.allclose(resumed[k], eager_run[k], atol=1e-6, rtol=1e-5), k
    out = capsys.readouterr().out
    assert "rwkvft: note: --compile: 2 blocks compiled with aot_eager" in out
    assert "rwkvft: note: --compile: " in out and "s compiling in the first step" in out
    log = (proj / "train_log.txt").read_text()
    assert "--compile: 2 blocks compiled" in log and "s compiling in the first step" in log


def test_bench_compile_needs_a_warm_up_step(capsys):
    assert main(["bench", "--size", "tiny", "--compile", "1", "--warmup", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rwkvft: error: --compile 1 needs --warmup 1 or more: the first step compiles, "
                   "and is not timed"]


def _ddp(script: list[str], argv: list[str]) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *script, *argv], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_ddp_compiled_equals_eager_ddp(small_model, tokens_npy, tmp_path):
    """Two CPU processes (gloo) with --compile train the adapter the eager DDP run trains: the
    ranks see different batches, so equal per-rank checksums mean DDP's gradient hooks
    all-reduced every trainable gradient of the compiled blocks (and DDP, with
    find_unused_parameters off, fails a step where a trainable tensor gets no gradient)."""
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    ddp = {"devices": 2, "strategy": "ddp", "epoch_count": 1, "epoch_steps": 3}
    _ddp(["-m", "rwkvft"], _flags(small_model, eager, tokens_npy, **ddp))
    r = _ddp([str(Path(__file__).with_name("aot_eager_main.py"))],
             _flags(small_model, compiled, tokens_npy, "--compile", **ddp))
    a, b = (torch.load(p / "rwkv-0.pth", weights_only=True) for p in (eager, compiled))
    assert set(a) == set(b) and a
    for k in a:
        assert torch.allclose(b[k], a[k], atol=1e-6, rtol=1e-5), k
    losses = [[json.loads(l)["loss"] for l in (p / "loss.jsonl").read_text().splitlines()]
              for p in (eager, compiled)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5) and len(losses[0]) == 3
    line = [l for l in (compiled / "train_log.txt").read_text().splitlines()
            if "checksum per rank" in l]
    sums = json.loads(line[0].split(": ", 1)[1])
    assert len(sums) == 2 and sums[0] == sums[1]
    assert r.stdout.count("rwkvft: note: --compile: 2 blocks compiled with aot_eager") == 1, r.stdout


@pytest.fixture(scope="module")
def inductor_model(tmp_path_factory):
    """`rwkvft init`'s tiny RWKV-7 of test_compile's inductor case (C 64, heads of 32, V 64) and
    tokens for it: the same block graphs, so inductor's cache of that test serves this run."""
    import numpy as np
    from rwkvft.formats import write_state_dict
    from rwkvft.models.init import init_state_dict, new_config
    root = tmp_path_factory.mktemp("inductor")
    model = write_state_dict(init_state_dict(new_config(2, 64, 64, 32), 0, trainable=True),
                             root / "init.pth", dtype=torch.float32)
    np.save(root / "tokens.npy", np.tile(np.random.default_rng(0).integers(1, 64, 97), 10))
    return model, root / "tokens.npy"


def test_train_cli_with_inductor(inductor_model, tmp_path, capsys):
    """The user's path, `rwkvft train ... --compile 1` with the real backend: the note and the
    compile time printed, the flag in train_config.json, and the eager run's losses."""
    from rwkvft.models.compile import cannot_compile
    if cannot_compile("cpu"):
        pytest.skip(cannot_compile("cpu"))
    model, data = inductor_model
    over = {"ctx_len": 16, "micro_bsz": 1, "epoch_count": 1, "peft_config": '{"r":8}'}
    assert main(_flags(model, tmp_path / "eager", data, **over)) == 0
    assert main(_flags(model, tmp_path / "compiled", data, "--compile", "1", **over)) == 0
    out = capsys.readouterr().out
    assert "rwkvft: note: --compile: 2 blocks compiled with inductor" in out
    assert "s compiling in the first step" in out
    config = json.loads((tmp_path / "compiled" / "train_config.json").read_text())
    assert config["compile"] is True
    losses = [[json.loads(l)["loss"] for l in (tmp_path / p / "loss.jsonl").read_text().splitlines()]
              for p in ("eager", "compiled")]
    assert len(losses[0]) == 2 and losses[1] == pytest.approx(losses[0], rel=1e-5)
