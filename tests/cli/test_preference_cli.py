"""`rwkvft train --objective dpo|orpo|simpo` end to end on CPU (the shipped sample pairs and a
tiny World-vocabulary model), resume, and bad input (one error line, before the model is read,
nothing written)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rwkvft.cli import main
from rwkvft.data import preference as pref_data

from preference_helpers import SAMPLE, dpo_argv as _flags, loss_rows as _rows
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
           "logps/chosen", "logps/rejected", "nll_loss")


@pytest.fixture(scope="module")
def world_tiny(make_checkpoint):
    """The tokenizer needs V = 65536; two layers of 64 channels keep the run quick."""
    return make_checkpoint(n_layer=2, n_embd=64, vocab_size=65536, seed=4)


def test_dpo_run_logs_metrics_validates_saves_best_and_merges(capsys, world_tiny, tmp_path):
    proj, merged = tmp_path / "dpo", tmp_path / "merged.pth"
    argv = _flags(world_tiny, proj, epoch_count=2, val_split=0.2, save_best=1, merge_output=merged)
    assert main(argv) == 0
    rows = _rows(proj)
    train = [r for r in rows if r.get("kind", "train") == "train"]
    val = [r for r in rows if r.get("kind") == "val"]
    assert len(train) == 6 and len(val) == 2
    for r in train:
        assert all(k in r for k in METRICS), r
    assert train[0]["rewards/margins"] == 0.0  # the first step's policy is the reference
    assert val[0]["pairs"] == 4 and 0 <= val[-1]["rewards/accuracies"] <= 1
    for name in ("rwkv-0.pth", "rwkv-1.pth", "rwkv-best.pth", "loss.png", "last.ckpt"):
        assert (proj / name).is_file(), name
    base = torch.load(world_tiny, weights_only=True)
    assert set(torch.load(merged, weights_only=True)) == set(base)
    log = (proj / "train_log.txt").read_text()
    assert "preference data: 20 records: 20 pairs" in log and "validation: 4 preference pairs" in log
    _eval_pairs_scores_base_and_adapter(capsys, world_tiny, proj / "rwkv-1.pth")


def _eval_pairs_scores_base_and_adapter(capsys, model, adapter):
    """`rwkvft eval --pairs --compare`: both models' rankings and DPO's rewards between them."""
    capsys.readouterr()
    assert main(["eval", "--model", str(model), "--adapter", str(adapter), "--data_file", str(SAMPLE), "--pairs",
                 "--compare", "--json", "--progress", "0", "--beta", "0.5"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pairs"] == 20 and {"base", "adapted", "rewards"} <= set(res)
    r = res["rewards"]
    assert 0 <= r["rewards/accuracies"] <= 1
    # the reward margin is beta x (adapted margin - base margin): same pairs, same log-probs
    want = 0.5 * (res["adapted"]["margin"] - res["base"]["margin"])
    assert r["rewards/margins"] == pytest.approx(want, rel=1e-6, abs=1e-6)
    assert main(["eval", "--model", str(model), "--data_file", str(SAMPLE), "--pairs", "--json",
                 "--progress", "0", "--ctx_len", "48"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["base"] == pytest.approx(res["base"]) and "rewards" not in alone


@pytest.mark.parametrize("objective", ["orpo", "simpo"])
def test_reference_free_objectives_train(world_tiny, tmp_path, objective):
    proj = tmp_path / objective
    assert main(_flags(world_tiny, proj, objective=objective, peft="state", peft_config="{}",
                       epoch_steps=2)) == 0
    rows = _rows(proj)
    assert len(rows) == 2 and all(k in rows[0] for k in METRICS)
    if objective == "orpo":
        assert "log_odds_ratio" in rows[0] and "log_odds_chosen" in rows[0]
    assert (proj / "rwkv-0.pth").is_file()


def test_resume_mid_epoch_gives_the_uninterrupted_adapter(world_tiny, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    over = {"epoch_steps": 4, "save_every_steps": 2}
    assert main(_flags(world_tiny, full, **over)) == 0
    assert main(_flags(world_tiny, part, max_steps=2, **over)) == 0
    assert (part / "rwkv-step2.pth").is_file() and not (part / "rwkv-0.pth").exists()
    assert main(_flags(world_tiny, part, **over) + ["--resume"]) == 0
    a = torch.load(full / "rwkv-0.pth", weights_only=True)
    b = torch.load(part / "rwkv-0.pth", weights_only=True)
    assert set(a) == set(b)
    for k in a:
        assert (a[k] - b[k]).abs().max() <= 1e-6, k
    ra, rb = _rows(full), _rows(part)
    assert [r["step"] for r in rb] == [1, 2, 3, 4]
    for x, y in zip(ra, rb):
        assert x["rewards/margins"] == pytest.approx(y["rewards/margins"], abs=1e-6)


# ---------- bad input: one line, before the model is read, nothing written ----------
def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rwkvft: error: "), err
    return err[0]


def _write(tmp_path, name, records) -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return p


@pytest.mark.parametrize("case,records,needle", [
    ("missing chosen", [{"prompt": "q", "rejected": "b"}] * 3, "no record is a preference pair (3 missing 'chosen'"),
    ("plain text", [{"text": "hello there"}] * 3, "no record is a preference pair"),
    ("all identical", [{"prompt": "q", "chosen": "a", "rejected": "a"}] * 3,
     "no usable preference pair (3 records: 0 pairs, 0 truncated, skipped 3 (3 identical chosen and rejected)"),
    ("too many malformed", [{"prompt": "q", "chosen": "a", "rejected": "b"}] * 3 + [{"prompt": "q"}],
     "1 of 4 records in"),
])
def test_bad_preference_data(capsys, tmp_path, case, records, needle):
    data = _write(tmp_path, "pairs.jsonl", records)
    proj = tmp_path / "run"
    # a --load_model that does not exist: the data error must come before the model is read
    msg = _error(capsys, _flags(tmp_path / "no-model.pth", proj, data))
    assert needle in msg, msg
    assert not proj.exists()


def test_plain_text_file_and_flags(capsys, tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("just some text\n")
    missing = tmp_path / "no-model.pth"
    msg = _error(capsys, _flags(missing, tmp_path / "r", txt))
    assert "trains on preference pairs" in msg and "is utf-8 data" in msg
    assert "--beta must be positive (or -1), got 0.0" in _error(capsys, _flags(missing, tmp_path / "r", beta=0))
    assert "--label_smoothing must be in [0, 0.5)" in _error(capsys, _flags(  # robust: the one problem
        missing, tmp_path / "r", label_smoothing=0.5, dpo_loss="robust"))
    assert "--label_smoothing is used by --dpo_loss robust" in _error(
        capsys, _flags(missing, tmp_path / "r", label_smoothing=0.1))
    assert "--objective 'kto' is not one of" in _error(capsys, _flags(missing, tmp_path / "r", objective="kto"))
    msg = _error(capsys, _flags(missing, tmp_path / "r", train_type="infctx", ctx_len=64, chunk_ctx=32))
    assert "not in --train_type infctx chunks; drop --train_type infctx and set --ctx_len to your longest pair" in msg
    assert "rwkvft data FILE --objective dpo" in msg
    assert not (tmp_path / "r").exists()


def test_some_identical_pairs_are_counted_skips(tmp_path):
    good = {"prompt": "q", "chosen": "yes", "rejected": "no"}
    data = _write(tmp_path, "p.jsonl", [good] * 5 + [{"prompt": "q", "chosen": "a", "rejected": "a"}])
    pairs, stats = pref_data.read_pairs(str(data), 48)
    assert len(pairs) == 5 and stats.skipped["identical chosen and rejected"] == 1


def test_ddp_two_processes_equal_one_process(world_tiny, tmp_path):
    """2 CPU processes x micro_bsz 1 see the pairs one process sees at micro_bsz 2 (rank r takes
    samples r, r+2, ...): the same metrics in loss.jsonl and the same adapter."""
    import subprocess
    import sys
    one, ddp = tmp_path / "one", tmp_path / "ddp"
    assert main(_flags(world_tiny, one, epoch_steps=2, micro_bsz=2)) == 0
    argv = _flags(world_tiny, ddp, epoch_steps=2, micro_bsz=1, devices=2, strategy="ddp")[1:]
    r = subprocess.run([sys.executable, "-m", "rwkvft", "train", *argv], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    # nll_loss is each rank's token-weighted mean, then averaged over ranks: it differs from the
    # pooled figure when the ranks' chosen answers differ in length; "loss" is rank 0's own (as
    # for SFT runs)
    for x, y in zip(_rows(one), _rows(ddp), strict=True):
        for k in [m for m in METRICS if m != "nll_loss"]:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-5), k
    a = torch.load(one / "rwkv-0.pth", weights_only=True)
    b = torch.load(ddp / "rwkv-0.pth", weights_only=True)
    # AdamW's first updates are about lr x sign(gradient): a gradient within rounding of zero
    # (one process's batch of 2 against two ranks' mean) moves its weight by up to lr, so single
    # elements may differ by a fraction of lr (measured: 1.3e-6 in 1 of 1024, lr 1e-3); a wrong
    # split of the data or a missing all-reduce moves most elements by about lr
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-2 * 1e-3), k


# ---------- `rwkvft data` shows pairs ----------
def test_data_command_shows_pairs_token_counts_and_skips(capsys, tmp_path):
    good = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."}
    records = [good, {"prompt": "q", "chosen": "same", "rejected": "same"}, {"prompt": "q", "rejected": "b"},
               {"prompt": "Tell me. " * 40, "chosen": "Sure thing.", "rejected": "No."}] + [good] * 200
    data = _write(tmp_path, "pairs.jsonl", records)
    before = data.read_bytes()
    assert main(["data", str(data), "--ctx_len", "32", "--json", "--show", "1", "--progress", "0"]) == 0
    res = json.loads(capsys.readouterr().out)
    pairs, stats = pref_data.read_pairs(str(data), 32)
    t = res["totals"]
    assert (t["records"], t["pairs"], t["truncated"]) == (204, 202, 1)
    assert t["skipped_by_reason"] == {"identical chosen and rejected": 1}
    assert t["malformed_by_reason"] == {"missing 'chosen'": 1}
    assert t["tokens"] == {k: sum(len(getattr(p, k)) for p in pairs) for k in ("prompt", "chosen", "rejected")}
    assert res["lint"] == [{"record": 2, "message": "skipped: identical chosen and rejected"},
                           {"record": 3, "message": "malformed: missing 'chosen'"}]
    (shown,) = res["pairs"]
    assert shown == {"record": 1, "tokens": {"prompt": len(pairs[0].prompt), "chosen": len(pairs[0].chosen),
                                             "rejected": len(pairs[0].rejected)},
                     "prompt": "User: Name a colour.\n\nAssistant:", "chosen": " Blue.\n\n\x00",
                     "rejected": " No.\n\n\x00"}
    # the text view marks the scored answers; --objective dpo gives the same view
    assert main(["data", str(data), "--ctx_len", "32", "--show", "1", "--color", "never", "--objective", "dpo",
                 "--progress", "0"]) == 0
    out = capsys.readouterr().out
    assert "chosen:[[ Blue.\n\n<EOD>]]" in out and "rejected:[[ No.\n\n<EOD>]]" in out
    assert "records: 204 read, 202 pairs, 1 truncated to ctx_len; skipped 1; 1 identical" in out
    assert data.read_bytes() == before
