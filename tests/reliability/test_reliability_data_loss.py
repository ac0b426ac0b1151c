"""Issue 17, "lost data": --merge_output, --overwrite and `demo --force` never destroy what the
user has, and no file of an old run can be merged with a new run's adapter_config.json."""
from __future__ import annotations

import shutil
from pathlib import Path

import lightning  # noqa: F401  imported at collection so its log handler binds the session's
import pytest  # stderr, not one test's capture (closed after that test)
import torch

from reliability_helpers import (assert_unchanged, check_one_error, copy_run, expect_error,
                                 run_subprocess, snapshot, train_flags)
from rwkvft.cli import main

OLD_CONFIG = '{"r":4,"lora_alpha":32}'
NEW_CONFIG = '{"r":4,"lora_alpha":8}'


@pytest.fixture(scope="module")
def old_run(small_model, tokens_npy, tmp_path_factory):
    """A finished LoRA run (alpha 32, 3 epochs), run as a user would with --debug: the library
    notices we hide by default are shown then."""
    proj = tmp_path_factory.mktemp("old") / "run"
    r = run_subprocess(["--debug", *train_flags(small_model, proj, tokens_npy, epoch_count=3,
                                                peft_config=OLD_CONFIG)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Tip:" in r.stderr and "LeafSpec" in r.stderr  # --debug shows library notices
    assert sorted(p.name for p in proj.glob("rwkv-*.pth")) == ["rwkv-0.pth", "rwkv-1.pth", "rwkv-2.pth"]
    return proj


def user_model(tmp_path, small_model) -> Path:
    p = tmp_path / "my-model.pth"
    shutil.copyfile(small_model, p)
    return p


# ---------- --merge_output ----------
def test_merge_output_existing_file_needs_overwrite(capsys, small_model, tokens_npy, tmp_path):
    mine = user_model(tmp_path, small_model)
    before = snapshot(tmp_path, small_model, tokens_npy)
    expect_error(capsys, train_flags(small_model, tmp_path / "p", tokens_npy) +
                 ["--merge_output", mine], "already exists", "--overwrite")
    assert_unchanged(before)
    assert not (tmp_path / "p").exists()  # refused before anything was created


@pytest.mark.parametrize("target", ["data", "data_bin", "base", "run_file", "adapter"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_merge_output_never_writes_onto_inputs_or_run_files(capsys, small_model, tokens_npy,
                                                            old_run, tmp_path, target, overwrite):
    proj = copy_run(old_run, tmp_path / "run")
    data = tmp_path / "tokens.npy"
    shutil.copyfile(tokens_npy, data)
    base = user_model(tmp_path, small_model)
    flags = {"data_file": data}
    if target == "data_bin":  # a binidx prefix given as .bin: the .idx is data too
        (tmp_path / "d.bin").write_bytes(b"\0" * 64)
        (tmp_path / "d.idx").write_bytes(b"\0" * 64)
        flags = {"data_file": tmp_path / "d.bin", "data_type": "binidx"}
    out = {"data": data, "data_bin": tmp_path / "d.idx", "base": base,
           "run_file": proj / "loss.jsonl", "adapter": proj / "rwkv-1.pth"}[target]
    other = tmp_path / "fresh"  # the run folder of the new run (adapter/run_file: the old run's)
    argv = train_flags(base, proj if target in ("run_file",) else other, tokens_npy, **flags)
    argv += ["--merge_output", out] + (["--overwrite"] if overwrite else [])
    before = snapshot(tmp_path)
    expect_error(capsys, argv, {"data": "is the training data", "data_bin": "is the training data",
                                "base": "is the base model", "run_file": "a file this run writes",
                                "adapter": "is an adapter file"}[target])
    assert_unchanged(before)


# ---------- --overwrite ----------
def test_overwrite_removes_exactly_the_run_files_and_old_adapters_never_merge(
        capsys, small_model, tokens_npy, old_run, tmp_path):
    proj = copy_run(old_run, tmp_path / "run")
    notes = proj / "notes.txt"
    notes.write_text("my notes")
    (proj / "eval").mkdir()
    (proj / "eval" / "scores.json").write_text("{}")
    merged = tmp_path / "merged.pth"
    merged.write_bytes(b"an older merge the user wants replaced")
    keep = {p.name: p.read_bytes() for p in old_run.glob("rwkv-*.pth")}
    user_files = snapshot(notes, proj / "eval")

    r = run_subprocess(train_flags(small_model, proj, tokens_npy, epoch_count=1,
                                   peft_config=NEW_CONFIG) +
                       ["--overwrite", "--merge_output", merged])
    assert r.returncode == 0, r.stderr[-3000:]
    # start-up noise from Lightning is hidden without --debug
    assert "Tip:" not in r.stderr and "LeafSpec" not in r.stderr, r.stderr[-2000:]
    assert_unchanged(user_files)
    assert sorted(p.name for p in proj.iterdir()) == sorted(
        ["adapter_config.json", "eval", "last.ckpt", "loss.jsonl", "loss.png", "notes.txt",
         "rwkv-0.pth", "train_config.json", "train_log.txt"])
    assert "NEW RUN" in (proj / "train_log.txt").read_text()
    assert (proj / "train_log.txt").read_text().count("NEW RUN") == 1  # the old log went too
    assert torch.load(merged, weights_only=True)  # --overwrite allowed replacing merged.pth

    # the new adapter merges with alpha 8: W + 8/4 * B A
    out = tmp_path / "new-merged.pth"
    assert main(["merge", "--base", str(small_model), "--adapter", str(proj / "rwkv-0.pth"),
                 "--output", str(out), "--dtype", "fp32"]) == 0
    a = torch.load(proj / "rwkv-0.pth", weights_only=True)
    base = torch.load(small_model, weights_only=True)
    m = torch.load(out, weights_only=True)
    key = "blocks.0.att.key"
    want = base[key + ".weight"].float() + 2.0 * a[key + ".lora_B"] @ a[key + ".lora_A"]
    assert torch.allclose(m[key + ".weight"], want, atol=1e-6)

    # every file of the old run, put back beside the new config, is refused
    for name, data in sorted(keep.items()):
        (proj / name).write_bytes(data)
        before = snapshot(tmp_path)
        expect_error(capsys, ["merge", "--base", small_model, "--adapter", proj / name,
                              "--output", tmp_path / f"x-{name}"],
                     "was not saved with the adapter_config.json beside it")
        assert_unchanged(before)
        assert not (tmp_path / f"x-{name}").exists()


def test_overwrite_refuses_to_delete_an_input_named_like_a_run_file(capsys, small_model,
                                                                    tokens_npy, old_run, tmp_path):
    proj = copy_run(old_run, tmp_path / "run")
    data = proj / "loss.jsonl"  # the user's data happens to carry a run file's name
    before = snapshot(tmp_path)
    expect_error(capsys, train_flags(small_model, proj, data, data_type="jsonl") + ["--overwrite"],
                 "--data_file", "move it out")
    assert_unchanged(before)


# ---------- demo --force ----------
def _fake_old_demo(out: Path) -> dict:
    (out / "run").mkdir(parents=True)
    for name in ("demo-base.pth", "chat.jsonl", "demo-merged.pth", "run/rwkv-0.pth",
                 "run/adapter_config.json", "run/loss.jsonl", "run/last.ckpt",
                 "run/.loss.png.abcd1234.tmp"):
        (out / name).write_bytes(b"demo output")
    (out / "sub").mkdir()
    for name in ("my-notes.txt", "run/my-eval.txt", "sub/data.jsonl", "rwkv-notes.pth"):
        (out / name).write_text("the user's own file")
    return snapshot(*(out / n for n in ("my-notes.txt", "run/my-eval.txt", "sub/data.jsonl",
                                        "rwkv-notes.pth")))


def test_demo_without_force_changes_nothing(capsys, tmp_path):
    out = tmp_path / "demo"
    _fake_old_demo(out)
    before = snapshot(out)
    expect_error(capsys, ["demo", "--out", out], "--force")
    assert_unchanged(before)


def test_demo_force_removes_only_the_demo_files(tmp_path):
    from rwkvft.demo import _fresh_out
    out = tmp_path / "demo"
    user = _fake_old_demo(out)
    _fresh_out(out, force=True)
    assert_unchanged(user)
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == ["my-notes.txt", "run", "run/my-eval.txt", "rwkv-notes.pth", "sub", "sub/data.jsonl"]


def test_demo_force_refuses_a_folder_that_is_not_a_demo(capsys, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "chat.jsonl").write_text("the user's chat data")
    before = snapshot(out)
    expect_error(capsys, ["demo", "--out", out, "--force"], "does not look like a demo folder")
    assert_unchanged(before)
