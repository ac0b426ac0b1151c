"""Issue 17, "poor messages, values accepted, a hang": every numeric option is range-checked
(NaN/Inf included) before any work, messages name the real cause, multi-node waits say for
what and time out, quoted library errors are whole sentences."""
from __future__ import annotations

import argparse
import dataclasses

import lightning  # noqa: F401  imported at collection so its log handler binds the session's
import pytest  # stderr, not one test's capture (closed after that test)
import torch

from reliability_helpers import (assert_unchanged, check_one_error, expect_error, run_subprocess,
                                 snapshot, train_flags)
from rwkvft.config import RANGES, TrainConfig, add_train_arguments, resolve_config
from rwkvft.errors import UserError, quote


def _resolve(*argv):
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return resolve_config(p.parse_args(["--load_model", "m.pth", "--data_file", "d.npy", *argv]))


# ---------- one range table ----------
def test_every_numeric_setting_has_a_range():
    numeric = {f.name for f in dataclasses.fields(TrainConfig)
               if isinstance(f.default, (int, float)) and not isinstance(f.default, bool)}
    assert numeric == set(RANGES), numeric ^ set(RANGES)
    _resolve()  # the defaults are inside their ranges


@pytest.mark.parametrize("name", sorted(n for n in RANGES if isinstance(getattr(TrainConfig, n), float)))
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_inf_are_refused_for_every_float_setting(name, value):
    with pytest.raises(UserError, match=f"--{name} must be .*, got {value}"):
        _resolve(f"--{name}={value}")


@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_setting_refuses_a_value_below_its_range(name):
    rng = RANGES[name]
    below = (rng.lo - 1) if rng.lo is not None else None
    while below in rng.also:
        below -= 1
    value = int(below) if isinstance(getattr(TrainConfig, name), int) else below
    with pytest.raises(UserError, match=f"--{name} must be "):
        _resolve(f"--{name}={value}")


@pytest.mark.parametrize("flag,value,message", [
    ("weight_decay", "-0.1", "--weight_decay must be >= 0, got -0.1"),
    ("grad_clip", "-1", "--grad_clip must be >= 0, got -1.0; 0 = no clipping"),
    ("lr_final", "nan", "--lr_final must be in [0, 1] (or -1), got nan"),
    ("lr_init", "-1e-3", "--lr_init must be in (0, 1], got -0.001"),   # negative sci notation
    ("lr_final", "-2E-5", "--lr_final must be in [0, 1] (or -1), got -2e-05"),
])
def test_values_once_accepted_are_refused_with_a_reason(capsys, small_model, tokens_npy, tmp_path,
                                                        flag, value, message):
    # the value follows the flag as its own word, as a shell passes it
    argv = train_flags(small_model, tmp_path / "p", tokens_npy) + [f"--{flag}", value]
    expect_error(capsys, argv, message)
    assert not (tmp_path / "p").exists()


def test_usage_errors_are_one_line(capsys, tmp_path):
    expect_error(capsys, ["train", "--ctx_len", "abc"], "--ctx_len: invalid int value: 'abc'",
                 "rwkvft train --help")


def test_yaml_float_for_an_integer_is_refused(capsys, small_model, tokens_npy, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epoch_steps: 2.5\n")
    expect_error(capsys, train_flags(small_model, tmp_path / "p", tokens_npy, epoch_steps=None) +
                 ["--config", cfg], "epoch_steps: expected int, got 2.5")


def test_config_that_is_a_directory(capsys, small_model, tokens_npy, tmp_path):
    expect_error(capsys, train_flags(small_model, tmp_path / "p", tokens_npy) + ["--config", tmp_path],
                 "is a directory", "the YAML or JSON file inside it")


# ---------- messages that name the real cause ----------
def test_nan_in_the_base_is_named_at_load(capsys, small_model, tokens_npy, tmp_path):
    sd = torch.load(small_model, weights_only=True)
    sd["blocks.1.att.value.weight"][3, 5] = float("nan")
    bad = tmp_path / "nan.pth"
    torch.save(sd, bad)
    before = snapshot(tmp_path)
    msg = expect_error(capsys, train_flags(bad, tmp_path / "p", tokens_npy),
                       "has NaN or Inf values in blocks.1.att.value.weight", "damaged")
    assert "lr_init" not in msg
    assert_unchanged(before)


def test_merge_with_nan_lora_alpha_blames_the_flag(capsys, small_model, tmp_path):
    adapter = tmp_path / "peft-lora.pth"  # an RWKV-PEFT LoRA file: alpha must be given
    torch.save({"blocks.0.att.key.lora_A": torch.randn(4, 128),
                "blocks.0.att.key.lora_B": torch.randn(128, 4)}, adapter)
    before = snapshot(tmp_path, small_model)
    for cmd in (["merge", "--base", small_model, "--adapter", adapter, "--output", tmp_path / "m.pth"],
                ["generate", "--model", small_model, "--adapter", adapter, "--prompt", "x"],
                ["export", "--base", small_model, "--adapter", adapter, "--format", "ai00-lora",
                 "--output", tmp_path / "e.st"]):
        for value in ("nan", "inf"):   # export and merge share one range check (formats.with_alpha)
            msg = expect_error(capsys, cmd + ["--lora_alpha", value],
                               f"--lora_alpha must be a positive number, got {value}")
            assert "adapter is broken" not in msg
    assert_unchanged(before)
    assert not (tmp_path / "m.pth").exists() and not (tmp_path / "e.st").exists()


def test_merge_blames_a_nan_base_not_the_adapter(capsys, small_model, tmp_path):
    from rwkvft.formats import merge_state_dict
    sd = torch.load(small_model, weights_only=True)
    sd["blocks.0.att.key.weight"][0, 0] = float("inf")
    adapter = {"blocks.0.att.key.lora_A": torch.randn(4, 128), "blocks.0.att.key.lora_B": torch.randn(128, 4)}
    with pytest.raises(UserError, match="the base model's tensor blocks.0.att.key.weight contains NaN"):
        merge_state_dict(sd, adapter, {"method": "lora", "alpha": 8})


# ---------- --num_nodes on one machine ----------
def test_multi_node_wait_says_what_for_and_times_out(small_model, tokens_npy, tmp_path):
    r = run_subprocess(train_flags(small_model, tmp_path / "p", tokens_npy, num_nodes=2,
                                   dist_timeout=2), timeout=300)
    msg = check_one_error(r.returncode, r.stdout, r.stderr, "did not join at 127.0.0.1:",
                          "within --dist_timeout 2s", "NODE_RANK", "--num_nodes 1")
    port = msg.split("127.0.0.1:")[1].split()[0]
    assert f"waiting up to 2s for 1 other node(s) to join at 127.0.0.1:{port}" in r.stdout
    assert "Tip:" not in r.stderr  # Lightning's start-up advert is hidden without --debug


# ---------- quoting library errors ----------
def test_quote_keeps_the_whole_first_sentence():
    long = "PytorchStreamReader failed reading zip archive: failed finding central directory " \
           "because the archive ends early and the reader cannot find the record it needs there"
    assert quote(RuntimeError(long)) == long  # 160 characters: no 120-character cut
    assert quote(ValueError("Expecting ',' delimiter: line 1 column 9. More text here.\nline 2")) \
        == "Expecting ',' delimiter: line 1 column 9."
    text = quote(RuntimeError("word " * 100))
    assert text.endswith("word ...") and len(text) <= 304


def test_damaged_checkpoint_message_quotes_a_whole_sentence(capsys, tmp_path, small_model, tokens_npy):
    bad = tmp_path / "cut.pth"
    bad.write_bytes(small_model.read_bytes()[:5000])
    try:
        torch.load(bad, weights_only=True)
    except Exception as e:  # noqa: BLE001 - what torch itself says
        first = quote(e)
    msg = expect_error(capsys, train_flags(bad, tmp_path / "p", tokens_npy), "is truncated")
    assert f"({first})" in msg
