"""Issue 29, "--resume with a changed --loss_mask or --infctx_bptt is accepted silently": every
setting is either one that must match on resume or one listed as safe to change
(training/resume_rules.py), and a changed must-match setting is refused before anything changes."""
from __future__ import annotations

import dataclasses

import lightning  # noqa: F401  imported at collection so its log handler binds the session's
import pytest  # stderr, not one test's capture (closed after that test)

from reliability_helpers import assert_unchanged, copy_run, expect_error, snapshot, train_flags
from rwkvft.cli import main
from rwkvft.config import TrainConfig
from rwkvft.training.resume_rules import MUST_MATCH, SAFE


def test_every_setting_is_classified_once():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert not set(MUST_MATCH) & set(SAFE)
    assert set(MUST_MATCH) | set(SAFE) == fields, (fields - set(MUST_MATCH) - set(SAFE),
                                                   set(MUST_MATCH) | set(SAFE) - fields)
    # the two examples, and what an optimiser or the data order depends on
    for name in ("loss_mask", "infctx_bptt", "train_type", "chunk_ctx", "grad_clip", "weight_decay",
                 "beta1", "precision", "quant", "window_sampling"):
        assert name in MUST_MATCH, name


@pytest.fixture(scope="module")
def done_run(small_model, tokens_npy, tmp_path_factory):
    proj = tmp_path_factory.mktemp("done") / "run"
    assert main(train_flags(small_model, proj, tokens_npy)) == 0
    return proj


@pytest.mark.parametrize("flag, value", [("loss_mask", "pad"), ("infctx_bptt", "truncated"),
                                         ("grad_clip", "0.5"), ("weight_decay", "0.1"),
                                         ("window_sampling", "cover")])
def test_resume_refuses_a_changed_setting(capsys, small_model, tokens_npy, done_run, tmp_path,
                                          flag, value):
    proj = copy_run(done_run, tmp_path / "run")
    before = snapshot(proj, small_model, tokens_npy)
    expect_error(capsys, train_flags(small_model, proj, tokens_npy, **{flag: value}) + ["--resume"],
                 f"--resume: --{flag} is", f"but the run in {proj} used",
                 "use the same value to continue it")
    assert_unchanged(before)


def test_resume_accepts_a_safe_change(small_model, tokens_npy, done_run, tmp_path):
    proj = copy_run(done_run, tmp_path / "run")
    # a longer run (epoch_count), other save cadence and the progress bar: all listed as safe
    assert main(train_flags(small_model, proj, tokens_npy, epoch_count=3, epoch_save=2,
                            progress=1) + ["--resume"]) == 0
    assert (proj / "rwkv-2.pth").exists()
