"""Issue 17, "broken promises": a resumed run's logs read as one run, stale temp files of ours
are cleaned, --resume compares parsed adapter configs, ignored RWKV-PEFT flags say so."""
from __future__ import annotations

import argparse
import json
import shutil

import lightning  # noqa: F401  imported at collection so its log handler binds the session's
import pytest  # stderr, not one test's capture (closed after that test)

from reliability_helpers import assert_unchanged, copy_run, expect_error, snapshot, train_flags
from rwkvft.cli import main

TOKENS_PER_STEP = 2 * 16  # micro_bsz x ctx_len of train_flags


def _rows(proj):
    return [json.loads(l) for l in (proj / "loss.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def stopped_run(small_model, tokens_npy, tmp_path_factory):
    """3-epoch run stopped cleanly after epoch 0 (--my_exit 1): last.ckpt at step 2."""
    proj = tmp_path_factory.mktemp("stopped") / "run"
    assert main(train_flags(small_model, proj, tokens_npy, epoch_count=3, my_exit=1)) == 0
    return proj


def _as_if_killed(proj):
    """What a kill -9 during epoch 1 leaves: logged steps after last.ckpt (one cut mid-line)
    and temp files of interrupted saves (empty ones and an adapter-sized one)."""
    with open(proj / "loss.jsonl", "a") as f:
        for step in (3, 4):
            f.write(json.dumps({"step": step, "epoch": 1, "loss": 999.0, "lr": 0.01,
                                "tokens": 999, "tokens_per_s": 1.0}) + "\n")
        f.write('{"step": 5, "epoch": 1, "lo')
    stale = [".loss.png.abcd1234.tmp", ".adapter_config.json.x1y2z3w4.tmp", ".last.ckpt.tmp",
             ".rwkv-1.pth.q9w8e7r6.tmp", ".loss.jsonl.k_3j2h1g.tmp", ".train_config.json.aaaa1111.tmp"]
    for name in stale:
        (proj / name).write_bytes(b"")
    shutil.copyfile(proj / "rwkv-0.pth", proj / ".rwkv-1.pth.q9w8e7r6.tmp")
    return stale


def test_resumed_run_logs_read_as_one_run(small_model, tokens_npy, stopped_run, tmp_path):
    proj = copy_run(stopped_run, tmp_path / "run")
    assert [r["step"] for r in _rows(proj)] == [1, 2]
    stale = _as_if_killed(proj)
    mine = [".my-notes.tmp", "notes.tmp", ".loss.png.tmp.bak"]  # not our naming: kept
    for name in mine:
        (proj / name).write_text("the user's")
    user = snapshot(*(proj / n for n in mine))
    # the run used '{"r":4,"lora_alpha":8}'; the same config spelled differently resumes it
    argv = train_flags(small_model, proj, tokens_npy, epoch_count=3,
                       peft_config='{ "lora_alpha": 8.0, "r": 4 }') + ["--resume"]
    assert main(argv) == 0
    rows = _rows(proj)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["tokens"] for r in rows] == [TOKENS_PER_STEP * s for s in range(1, 7)]
    assert 999.0 not in [r["loss"] for r in rows]
    assert not [n for n in stale if (proj / n).exists()]
    assert_unchanged(user)
    from rwkvft.formats import read_adapter
    for name in ("rwkv-0.pth", "rwkv-1.pth", "rwkv-2.pth"):  # saves before and after the resume
        assert read_adapter(proj / name)[1]["alpha"] == 8.0

    full = tmp_path / "full"
    assert main(train_flags(small_model, full, tokens_npy, epoch_count=3)) == 0
    ref = _rows(full)
    assert [r["tokens"] for r in ref] == [r["tokens"] for r in rows]
    assert [r["loss"] for r in ref] == pytest.approx([r["loss"] for r in rows], rel=1e-5)


def test_stale_temp_files_of_our_naming_only():
    from rwkvft.training.safety import _STALE
    ours = [".loss.png.abcd1234.tmp", ".adapter_config.json.x1y2z3w4.tmp", ".last.ckpt.tmp",
            ".rwkv-12.pth.q9w8e7r6.tmp", ".rwkv-3.safetensors.a_b.tmp", ".rwkvft-write-test"]
    theirs = [".my-notes.tmp", "loss.png.tmp", ".loss.png.abcd.tmp.bak", ".rwkv-x.pth.abc.tmp",
              ".data.jsonl.abcd1234.tmp", "rwkv-0.pth"]
    assert all(_STALE.fullmatch(n) for n in ours)
    assert not any(_STALE.fullmatch(n) for n in theirs)


def test_resume_still_refuses_a_different_peft_config(capsys, small_model, tokens_npy,
                                                      stopped_run, tmp_path):
    proj = copy_run(stopped_run, tmp_path / "run")
    before = snapshot(proj)
    expect_error(capsys, train_flags(small_model, proj, tokens_npy, epoch_count=3,
                                     peft_config='{"r": 4, "lora_alpha": 16}') + ["--resume"],
                 "--peft_config", "use the same value")
    assert_unchanged(before)


@pytest.mark.parametrize("flag", sorted(__import__("rwkvft.config", fromlist=["x"]).IGNORED_FLAGS))
def test_every_ignored_rwkv_peft_flag_prints_one_note(capsys, flag):
    from rwkvft.config import add_train_arguments, resolve_config
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    resolve_config(p.parse_args(["--load_model", "m.pth", "--data_file", "d.npy", f"--{flag}", "1"]))
    notes = [l for l in capsys.readouterr().out.splitlines() if l.startswith("rwkvft: note:")]
    assert len(notes) == 1 and f"--{flag} is accepted for RWKV-PEFT scripts but ignored" in notes[0]


def test_dropout_note_on_the_command_line(capsys, small_model, tmp_path):
    # the note comes before the run starts (here the missing data file stops it)
    expect_error(capsys, train_flags(small_model, tmp_path / "p", tmp_path / "none.npy",
                                     dropout=0.5), "none.npy")
    capsys.readouterr()
    main(train_flags(small_model, tmp_path / "p", tmp_path / "none.npy", dropout=0.5))
    out = capsys.readouterr().out
    assert out.count("rwkvft: note: --dropout is accepted for RWKV-PEFT scripts but ignored") == 1
    assert "--peft_config" in out  # it says where adapter dropout is set
