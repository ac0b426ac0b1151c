"""Issue 17, "tracebacks": each of the 13 inputs and faults that printed a Python traceback now
gets one `rwkvft: error:` line (exit 2), and no file the user had changes."""
from __future__ import annotations

import errno
import pathlib
import subprocess
import sys

import lightning  # noqa: F401  imported at collection so its log handler binds the session's
import pytest  # stderr, not one test's capture (closed after that test)
import torch

from reliability_helpers import (REPO, assert_unchanged, check_one_error, copy_run,
                                 expect_error, snapshot, train_flags)
from rwkvft.cli import main


@pytest.fixture(scope="module")
def done_run(small_model, tokens_npy, tmp_path_factory):
    proj = tmp_path_factory.mktemp("done") / "run"
    assert main(train_flags(small_model, proj, tokens_npy)) == 0
    return proj


def test_integer_checkpoint_tensors(capsys, small_model, tokens_npy, tmp_path):
    bad = tmp_path / "int64.pth"
    torch.save({k: t.to(torch.int64) for k, t in torch.load(small_model, weights_only=True).items()}, bad)
    before = snapshot(tmp_path)
    expect_error(capsys, train_flags(bad, tmp_path / "p", tokens_npy), "is int64",
                 "not floating point", "re-export")
    assert_unchanged(before)


TORCH_DISK_FULL = RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")


def test_disk_full_mid_run_in_torch_save(capsys, small_model, tokens_npy, tmp_path, monkeypatch):
    import rwkvft.formats.adapter_file as aio
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        if ".rwkv-1.pth." in str(f):  # torch's zip writer fails this way when the disk fills
            raise TORCH_DISK_FULL
        real_save(obj, f, *a, **k)

    monkeypatch.setattr(aio.torch, "save", failing_save)
    proj = tmp_path / "p"
    expect_error(capsys, train_flags(small_model, proj, tokens_npy), "could not save the adapter",
                 "is the disk full?", "unexpected pos 64 vs 0", "rwkv-0.pth", "intact")
    assert sorted(p.name for p in proj.glob("rwkv-*")) == ["rwkv-0.pth"]
    assert not list(proj.glob(".*.tmp"))
    assert torch.load(proj / "rwkv-0.pth", weights_only=True)


def test_disk_full_while_saving_last_ckpt(capsys, small_model, tokens_npy, tmp_path, monkeypatch):
    import lightning as L
    real = L.Trainer.save_checkpoint
    calls = []

    def failing(self, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise TORCH_DISK_FULL
        return real(self, path, *a, **k)

    monkeypatch.setattr(L.Trainer, "save_checkpoint", failing)
    proj = tmp_path / "p"
    expect_error(capsys, train_flags(small_model, proj, tokens_npy), "could not save",
                 "last.ckpt", "is the disk full?", "intact")
    assert not list(proj.glob(".*.tmp"))
    assert torch.load(proj / "last.ckpt", weights_only=True)["global_step"] == 2  # epoch 0's


def test_disk_full_at_start(capsys, small_model, tokens_npy, tmp_path, monkeypatch):
    real = pathlib.Path.write_text

    def full(self, *a, **k):
        if ".train_config.json." in self.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    before = snapshot(tmp_path, small_model, tokens_npy)
    expect_error(capsys, train_flags(small_model, tmp_path / "p", tokens_npy), "the disk is full",
                 "train_config.json", "free some space")
    assert_unchanged(before)
    assert not list((tmp_path / "p").glob(".*.tmp"))


def test_resume_with_corrupt_train_config(capsys, small_model, tokens_npy, done_run, tmp_path):
    proj = copy_run(done_run, tmp_path / "run")
    (proj / "train_config.json").write_text('{"peft": "lora", "ctx_len": 16')  # cut by a crash
    before = snapshot(tmp_path)
    expect_error(capsys, train_flags(small_model, proj, tokens_npy, epoch_count=3) + ["--resume"],
                 "train_config.json is damaged", "--overwrite")
    assert_unchanged(before)


def test_resume_with_another_r_and_no_train_config(capsys, small_model, tokens_npy, done_run, tmp_path):
    proj = copy_run(done_run, tmp_path / "run")
    (proj / "train_config.json").unlink()
    before = snapshot(tmp_path)
    expect_error(capsys, train_flags(small_model, proj, tokens_npy, epoch_count=3,
                                     peft_config='{"r":8,"lora_alpha":8}') + ["--resume"],
                 "--resume", "has shape (4, 128)", "(8, 128)", "--peft_config")
    assert_unchanged(before)
    assert not (proj / "train_config.json").exists()  # nothing was written for the refused run


@pytest.mark.parametrize("text,message", [
    (b"peft_config: [8]\n", "peft_config must be a mapping"),
    (b"ctx_len: 16\nuser_role: \xff\xfeUser\n", "is not UTF-8 text (byte 0xff at offset 23)"),
])
def test_bad_yaml_config(capsys, small_model, tokens_npy, tmp_path, text, message):
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes(text)
    before = snapshot(tmp_path)
    argv = train_flags(small_model, tmp_path / "p", tokens_npy, peft_config=None) + ["--config", cfg]
    expect_error(capsys, argv, message)
    assert_unchanged(before)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("flag,value,message", [
    ("lr_init", "nan", "--lr_init must be in (0, 1], got nan"),
    ("beta1", "1.5", "--beta1 must be in [0, 1), got 1.5"),
    ("num_workers", "-1", "--num_workers must be >= 0, got -1"),
    ("random_seed", str(2**70), f"--random_seed must be in [0, {2**32 - 1}], got {2**70}"),
])
def test_out_of_range_numbers(capsys, small_model, tokens_npy, tmp_path, flag, value, message):
    expect_error(capsys, train_flags(small_model, tmp_path / "p", tokens_npy, **{flag: value}), message)
    assert not (tmp_path / "p").exists()  # refused before any work


def test_generate_temperature_nan(capsys, small_model):
    expect_error(capsys, ["generate", "--model", small_model, "--prompt", "x", "--temperature", "nan"],
                 "--temperature must be >= 0, got nan")


def test_generate_prompt_that_is_not_utf8(capsys, small_model):
    # Python hands argv bytes that are not UTF-8 to us as lone surrogates
    expect_error(capsys, ["generate", "--model", small_model, "--prompt", "caf\udce9"],
                 "--prompt is not valid UTF-8", "character 3")


def test_generate_prompt_bytes_that_are_not_utf8_from_a_shell(small_model):
    r = subprocess.run([sys.executable, "-m", "rwkvft", "generate", "--model", str(small_model),
                        "--prompt", b"caf\xe9"], cwd=REPO, capture_output=True, timeout=300)
    check_one_error(r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"),
                    "--prompt is not valid UTF-8")
