"""The multi-device and DeepSpeed pieces that need no run: where --quant quantizes (Q1), the
DDP strategy objects Lightning resolves (Q2), the DeepSpeed strategy's settings (D5, D6) and
last.ckpt as a folder: atomic replacement, recovery after a kill, --overwrite (D2)."""
from __future__ import annotations

import os

import lightning as L
import pytest
import torch

from rwkvft.config import TrainConfig
from rwkvft.training import safety
from rwkvft.training.model_prep import quant_device
from rwkvft.training.execution import lightning_strategy as _strategy


# ---------------------------------------------------------------- Q1
@pytest.mark.parametrize("rank", ["0", "1", "3"])
def test_quantize_on_the_process_own_gpu(monkeypatch, rank):
    # quant_device runs before Lightning selects the process's GPU: not current_device()
    monkeypatch.setenv("LOCAL_RANK", rank)
    assert quant_device("gpu") == torch.device("cuda", int(rank))
    assert quant_device("cpu") is None


# ---------------------------------------------------------------- Q2
def _trainer_strategy(strategy, devices=2, quant="nf4"):
    cfg = TrainConfig(strategy=strategy, devices=devices, quant=quant, accelerator="cpu")
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=_strategy(cfg), logger=False,
                        enable_checkpointing=False, enable_progress_bar=False)
    return trainer.strategy


@pytest.mark.parametrize("strategy", ["auto", "ddp", "ddp_spawn"])
def test_ddp_never_broadcasts_a_quantized_base(strategy):
    from lightning.pytorch.strategies import DDPStrategy
    s = _trainer_strategy(strategy)
    assert isinstance(s, DDPStrategy) and s._ddp_kwargs.get("broadcast_buffers") is False
    assert s._start_method == ("spawn" if strategy == "ddp_spawn" else "popen")


def test_unquantized_and_single_device_strategies_are_lightning_defaults():
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
    assert isinstance(_trainer_strategy("auto", devices=1), SingleDeviceStrategy)
    s = _trainer_strategy("ddp", quant="none")
    assert isinstance(s, DDPStrategy) and "broadcast_buffers" not in s._ddp_kwargs


# ---------------------------------------------------------------- D5, D6: the strategy itself
@pytest.mark.parametrize("name,stage,offload", [("deepspeed_stage_1", 1, False),
                                                ("deepspeed_stage_2", 2, False),
                                                ("deepspeed_stage_2_offload", 2, True),
                                                ("deepspeed_stage_3", 3, False),
                                                ("deepspeed_stage_3_offload", 3, True)])
def test_deepspeed_strategy_keeps_its_stage_and_leaves_frozen_weights_out(name, stage, offload):
    pytest.importorskip("deepspeed")
    s = _strategy(TrainConfig(strategy=name, devices=2))
    zero = s.config["zero_optimization"]
    assert zero["stage"] == stage and ("offload_optimizer" in zero) == offload
    assert s.exclude_frozen_parameters is True


def test_deepspeed_backward_does_not_divide_by_the_accumulation_again(monkeypatch):
    """Lightning divides the loss by accumulate_grad_batches; the engine must not repeat it."""
    pytest.importorskip("deepspeed")
    from lightning.pytorch.strategies import DeepSpeedStrategy
    seen = {}
    monkeypatch.setattr(DeepSpeedStrategy.__mro__[1], "backward",
                        lambda self, loss, opt, *a, **kw: seen.update(kw))
    _strategy(TrainConfig(strategy="deepspeed_stage_2", devices=2)).backward(torch.ones(()), None)
    assert seen == {"scale_wrt_gas": False}


# ---------------------------------------------------------------- D2: last.ckpt as a folder
def _ds_folder(path, text):
    (path / "checkpoint").mkdir(parents=True)
    (path / "latest").write_text("checkpoint")
    (path / "checkpoint" / "mp_rank_00_model_states.pt").write_text(text)


def test_a_checkpoint_folder_replaces_the_previous_one(tmp_path):
    ckpt, tmp = tmp_path / "last.ckpt", tmp_path / ".last.ckpt.tmp"
    _ds_folder(ckpt, "first")
    _ds_folder(tmp, "second")
    safety.install_checkpoint(tmp, ckpt)  # old code: tmp.replace(ckpt) -> "Directory not empty"
    assert (ckpt / "checkpoint" / "mp_rank_00_model_states.pt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_kill_between_the_renames_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt, tmp = tmp_path / "last.ckpt", tmp_path / ".last.ckpt.tmp"
    _ds_folder(ckpt, "first")
    _ds_folder(tmp, "second")
    real = os.replace
    calls = []

    def replace(a, b):
        calls.append(a)
        if len(calls) == 2:  # the kill: after the old one moved aside, before the new one moved in
            raise KeyboardInterrupt
        real(a, b)
    monkeypatch.setattr(safety.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        safety.install_checkpoint(tmp, ckpt)
    monkeypatch.setattr(safety.os, "replace", real)
    assert not ckpt.exists()
    removed = safety.clean_stale_temps(tmp_path)  # the next start (with or without --resume)
    assert removed == [".last.ckpt.tmp"]
    assert (ckpt / "checkpoint" / "mp_rank_00_model_states.pt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_file_checkpoint_is_still_one_rename(tmp_path):
    ckpt, tmp = tmp_path / "last.ckpt", tmp_path / ".last.ckpt.tmp"
    ckpt.write_text("first")
    tmp.write_text("second")
    safety.install_checkpoint(tmp, ckpt)
    assert ckpt.read_text() == "second" and not tmp.exists()


def test_a_checkpoint_folder_is_a_run_file(tmp_path):
    """--overwrite removes a DeepSpeed last.ckpt folder; it marks the folder as a run."""
    _ds_folder(tmp_path / "last.ckpt", "x")
    (tmp_path / "notes").mkdir()
    assert safety.existing_run(tmp_path) == ["last.ckpt"]
    cfg = TrainConfig(proj_dir=str(tmp_path))
    assert safety.remove_run_files(cfg, tmp_path) == ["last.ckpt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_resume_from_a_folder_that_is_not_a_checkpoint_is_one_error(tmp_path):
    (tmp_path / "last.ckpt").mkdir()
    with pytest.raises(safety.UserError, match="cannot be read"):
        safety.read_resume_checkpoint(tmp_path / "last.ckpt")
