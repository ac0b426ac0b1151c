"""Validation, --save_best, step saves, budgets, the clean stop on SIGINT, and `rwkvft eval`."""
from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning  # noqa: F401  (bind Lightning's log handler at collection, as test_train does)
import numpy as np
import pytest
import torch

from rwkvft.cli import main

REPO = Path(__file__).resolve().parents[2]


# ---------- fixtures ----------
@pytest.fixture(scope="module")
def docs_npy(tmp_path_factory):
    """20 EOD-terminated documents of 20..59 random tokens (ids 1..255)."""
    rng = np.random.default_rng(0)
    docs = [np.append(rng.integers(1, 256, size=int(rng.integers(20, 60))), 0) for _ in range(20)]
    p = tmp_path_factory.mktemp("docs") / "docs.npy"
    np.save(p, np.concatenate(docs).astype(np.int64))
    return p


@pytest.fixture(scope="module")
def val_npy(tmp_path_factory):
    rng = np.random.default_rng(1)
    docs = [np.append(rng.integers(1, 256, size=30), 0) for _ in range(5)]
    p = tmp_path_factory.mktemp("val") / "val.npy"
    np.save(p, np.concatenate(docs).astype(np.int64))
    return p


def flags(model, proj, data, **over) -> list[str]:
    f = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "numpy",
         "dataload": "pad", "ctx_len": 64, "micro_bsz": 2, "epoch_steps": 4, "epoch_count": 2,
         "lr_init": 1e-2, "lr_final": 1e-3, "accelerator": "cpu", "precision": "fp32",
         "peft": "lora", "peft_config": '{"r":4,"lora_alpha":8}', "progress": 0}
    f.update(over)
    return [x for k, v in f.items() for x in (f"--{k}", str(v))]


def rows(proj: Path, kind: str) -> list[dict]:
    out = [json.loads(l) for l in (proj / "loss.jsonl").read_text().splitlines()]
    return [r for r in out if r.get("kind", "train") == kind]


def max_diff(a: Path, b: Path) -> float:
    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert set(x) == set(y)
    return max(float((x[k] - y[k]).abs().max()) for k in x)


# ---------- the held-out set ----------
def test_val_split_never_shares_a_document_with_training(tmp_path):
    from rwkvft.config import TrainConfig
    from rwkvft.data.tokenizer import WorldTokenizer
    from rwkvft.training.run import build_data, plan_run

    texts = [f"Document number {i} talks about topic {chr(65 + i)}." for i in range(10)]
    data = tmp_path / "ten.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    cfg = TrainConfig(load_model="x", data_file=str(data), data_type="jsonl", dataload="pad",
                      ctx_len=16, micro_bsz=1, epoch_steps=7, val_split=0.3, random_seed=0,
                      progress=False)
    dataset, val = build_data(plan_run(cfg), 65536)
    tok = WorldTokenizer()

    def text_of(sample):  # input + last target = the whole document (its EOD dropped)
        n = int(sample["mask"].sum())
        ids = sample["input_ids"][:n].tolist() + [int(sample["targets"][n - 1])]
        return tok.decode([i for i in ids if i != 0])

    held = {text_of(s) for s in val}
    trained = set()
    for epoch in range(3):  # three passes: every training document, many times over
        dataset.set_epoch(epoch)
        trained |= {text_of(dataset[i]) for i in range(len(dataset))}
    assert len(held) == 3 and len(trained) == 7  # round(0.3 x 10) held out, the rest trained
    assert held.isdisjoint(trained) and held | trained == set(texts)
    # deterministic: the same file, fraction and seed hold out the same documents
    assert {text_of(s) for s in build_data(plan_run(cfg), 65536)[1]} == held


def test_eval_samples_cover_every_token_once():
    """get/pack windows: every token after the first is a target exactly once (hand-made stream)."""
    from rwkvft.data.readers import Corpus
    from rwkvft.training.evaluation import eval_samples

    tokens = np.arange(1, 12, dtype=np.int64)                 # 11 tokens, one document
    corpus = Corpus(tokens, np.array([0, 11]), None, "hand")
    samples = eval_samples(corpus, None, 4, "get")
    assert [s["input_ids"][:int(s["mask"].sum())].tolist() for s in samples] == \
        [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    targets = [t for s in samples for t, m in zip(s["targets"].tolist(), s["mask"].tolist()) if m]
    assert targets == list(range(2, 12))
    packed = eval_samples(Corpus(np.array([5, 6, 7, 8, 9]), np.array([0, 2, 5]), None, "hand"),
                          None, 3, "pack")  # EODs added after each document, as pack does
    assert [t for s in packed for t, m in zip(s["targets"].tolist(), s["mask"].tolist()) if m] == \
        [6, 0, 7, 8, 9, 0]


# ---------- validation during training ----------
def test_val_loss_equals_rwkvft_eval_and_is_logged(small_model, docs_npy, val_npy, tmp_path, capsys):
    proj = tmp_path / "run"
    assert main(["train", *flags(small_model, proj, docs_npy, epoch_count=1, epoch_steps=3,
                                 peft="miss", peft_config='{"r":16}', train_parts="ln",
                                 val_file=val_npy, val_every=2)]) == 0
    val = rows(proj, "val")
    assert [r["step"] for r in val] == [2, 3]  # every 2 steps, and at the epoch end
    log = (proj / "train_log.txt").read_text()
    assert "val step 3 epoch 0: loss" in log and " time " in log.split("val step 3")[1].splitlines()[0]
    capsys.readouterr()
    assert main(["eval", "--model", str(small_model), "--adapter", str(proj / "rwkv-0.pth"),
                 "--data_file", str(val_npy), "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["tokens"] == val[-1]["tokens"] == 5 * 30  # every target of the 5 documents
    assert got["loss"] == pytest.approx(val[-1]["loss"], rel=1e-6)
    assert got["ppl"] == pytest.approx(np.exp(got["loss"]), rel=1e-9)
    # validating changes nothing in training: the same run without it ends with the same adapter
    plain = tmp_path / "plain"
    assert main(["train", *flags(small_model, plain, docs_npy, epoch_count=1, epoch_steps=3,
                                 peft="miss", peft_config='{"r":16}', train_parts="ln")]) == 0
    assert max_diff(plain / "rwkv-0.pth", proj / "rwkv-0.pth") == 0.0


def test_ddp_val_loss_is_the_whole_set(small_model, docs_npy, val_npy, tmp_path, capsys):
    """Two processes score half the samples each; the logged figure is the whole set's."""
    proj = tmp_path / "ddp"
    argv = flags(small_model, proj, docs_npy, devices=2, strategy="ddp", epoch_count=1,
                 epoch_steps=2, val_file=val_npy)
    r = subprocess.run([sys.executable, "-m", "rwkvft", "train", *argv], cwd=REPO,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    val = rows(proj, "val")
    assert len(val) == 1 and val[0]["tokens"] == 5 * 30
    assert main(["eval", "--model", str(small_model), "--adapter", str(proj / "rwkv-0.pth"),
                 "--data_file", str(val_npy), "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["loss"] == pytest.approx(val[0]["loss"], rel=1e-5)  # other batches, same sums


def test_loss_png_has_the_validation_curve(tmp_path):
    from PIL import Image

    from rwkvft.training.callbacks import plot_losses

    def orange_pixels(records) -> int:
        (tmp_path / "loss.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        plot_losses(tmp_path)
        px = np.asarray(Image.open(tmp_path / "loss.png").convert("RGB")).astype(int)
        return int((np.abs(px - [0xd9, 0x48, 0x0f]).sum(-1) < 40).sum())

    train = [{"step": s, "loss": 5 - s / 10} for s in range(1, 21)]
    val = [{"kind": "val", "step": s, "loss": 5.2 - s / 20} for s in (5, 10, 15, 20)]
    assert orange_pixels(train) == 0
    assert orange_pixels(train + val) > 200


def test_loss_png_right_hand_axes_do_not_overlap(tmp_path):
    """--eval_tasks with a preference objective: task scores and preference accuracy each get a
    right-hand axis. Drawn, the two axes (ticks, tick labels, axis label) and the three legends do
    not overlap, and every axis fits inside the figure."""
    from rwkvft.training.callbacks import loss_figure
    train = [{"step": s, "loss": 1 - s / 40, "rewards/accuracies": 0.5 + s / 50} for s in range(1, 21)]
    val = [{"kind": "val", "step": s, "loss": 0.9 - s / 50, "rewards/accuracies": 0.6} for s in (10, 20)]
    tasks = [{"kind": "tasks", "step": s, "scores": {"h28_mc/acc": 0.25 + s / 100, "h28_gen/exact_match": 0.1}}
             for s in (10, 20)]
    (tmp_path / "loss.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train + val + tasks))
    fig = loss_figure(tmp_path)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    main_ax, *twins = fig.axes
    assert [t.get_ylabel() for t in twins] == ["task score", "preference accuracy"]
    first, second = (t.yaxis.get_tightbbox(renderer) for t in twins)
    assert first.x1 <= second.x0, (first, second)           # side by side, the second further out
    legends = [a.get_legend().get_window_extent(renderer) for a in fig.axes]
    assert not any(a.overlaps(b) for i, a in enumerate(legends) for b in legends[i + 1:]), legends
    for box in (first, second, main_ax.yaxis.get_tightbbox(renderer)):
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1, (box, fig.bbox)
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_save_best_is_the_lowest_val_step(small_model, docs_npy, tmp_path):
    proj = tmp_path / "best"
    assert main(["train", *flags(small_model, proj, docs_npy, lr_init=0.05, lr_final=0.05,
                                 val_split=0.2, val_every=1, save_best=1,
                                 save_every_steps=1)]) == 0
    val = rows(proj, "val")
    assert [r["step"] for r in val] == list(range(1, 9))
    best = min(val, key=lambda r: r["loss"])["step"]
    assert max_diff(proj / "rwkv-best.pth", proj / f"rwkv-step{best}.pth") == 0.0
    last_best = [l for l in (proj / "train_log.txt").read_text().splitlines() if l.startswith("best:")][-1]
    assert f"is now step {best} " in last_best
    assert (proj / "adapter_config.json").exists()


def test_keep_last_never_deletes_best_or_final(small_model, docs_npy, tmp_path):
    proj = tmp_path / "keep"
    assert main(["train", *flags(small_model, proj, docs_npy, epoch_count=3, val_split=0.2,
                                 save_best=1, save_every_steps=1, keep_last=2,
                                 max_steps=7)]) == 0
    names = sorted(p.name for p in proj.glob("rwkv-*.pth"))
    # the epoch-0 save, the newest two step saves (7 is the final one) and the best
    assert names == ["rwkv-0.pth", "rwkv-best.pth", "rwkv-step6.pth", "rwkv-step7.pth"]
    assert len(rows(proj, "train")) == 7  # --max_steps ended the run inside epoch 1
    best = min(rows(proj, "val"), key=lambda r: r["loss"])["step"]
    assert f"is now step {best} " in (proj / "train_log.txt").read_text()


def test_resume_at_the_budget_trains_nothing_more(small_model, docs_npy, tmp_path):
    proj = tmp_path / "run"
    assert main(["train", *flags(small_model, proj, docs_npy, max_steps=3)]) == 0
    before = {p.name: p.read_bytes() for p in proj.glob("rwkv-*.pth")}
    assert list(before) == ["rwkv-step3.pth"] and len(rows(proj, "train")) == 3
    assert main(["train", *flags(small_model, proj, docs_npy, max_steps=3), "--resume"]) == 0
    assert {p.name: p.read_bytes() for p in proj.glob("rwkv-*.pth")} == before
    assert len(rows(proj, "train")) == 3
    assert "nothing to train: the budget of 3 optimizer steps" in (proj / "train_log.txt").read_text()


def test_prune_step_saves_by_step_number(tmp_path):
    from rwkvft.training.steps import prune_step_saves
    for n in ("rwkv-step5.pth", "rwkv-step10.pth", "rwkv-step40.pth", "rwkv-step100.pth",
              "rwkv-best.pth", "rwkv-3.pth", "rwkv-step7.safetensors"):
        (tmp_path / n).write_bytes(b"x")
    gone = prune_step_saves(tmp_path, 2, "pth")
    assert sorted(p.name for p in gone) == ["rwkv-step10.pth", "rwkv-step5.pth"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "rwkv-3.pth", "rwkv-best.pth", "rwkv-step100.pth", "rwkv-step40.pth", "rwkv-step7.safetensors"]


def test_max_tokens_stops_and_resume_from_mid_epoch_is_exact(small_model, docs_npy, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *flags(small_model, full, docs_npy)]) == 0
    # 3 steps of 2 samples x 64 tokens = 384 tokens: stops after step 3, inside epoch 0
    assert main(["train", *flags(small_model, part, docs_npy, max_tokens=3 * 2 * 64)]) == 0
    assert (part / "rwkv-step3.pth").exists() and not (part / "rwkv-0.pth").exists()
    assert main(["train", *flags(small_model, part, docs_npy), "--resume"]) == 0
    assert max_diff(full / "rwkv-1.pth", part / "rwkv-1.pth") <= 1e-6
    assert [r["loss"] for r in rows(full, "train")] == pytest.approx(
        [r["loss"] for r in rows(part, "train")], rel=1e-6)


def _start(argv, proj: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rwkvft", "train", *argv], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(p: subprocess.Popen, proj: Path, n: int) -> None:
    """Block until loss.jsonl holds n step records (the step-count marker)."""
    t0 = time.time()
    while time.time() - t0 < 300:
        f = proj / "loss.jsonl"
        if f.exists() and len(f.read_text().splitlines()) >= n:
            return
        assert p.poll() is None, p.communicate()[1][-2000:]
        time.sleep(0.02)
    raise AssertionError("the run never reached the marker")


def test_sigint_mid_epoch_then_resume_equals_uninterrupted(small_model, docs_npy, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    # one 16-step epoch: a stop seen at an epoch end saves rwkv-0.pth, not a step save, and a
    # tiny model's step can be quicker than this test's polling, so leave many steps of margin
    one_epoch = {"epoch_steps": 16, "epoch_count": 1}
    assert main(["train", *flags(small_model, full, docs_npy, **one_epoch)]) == 0
    p = _start(flags(small_model, part, docs_npy, **one_epoch), part)
    _wait_for_rows(p, part, 2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "rwkvft: interrupted" and "Traceback" not in err
    assert "--resume" in err  # says how to continue
    saved = sorted(part.glob("rwkv-step*.pth"))
    assert len(saved) == 1 and (part / "last.ckpt").exists()
    stopped_at = int(saved[0].stem.removeprefix("rwkv-step"))
    assert 2 <= stopped_at < 16 and not list(part.glob(".*.tmp"))
    assert main(["train", *flags(small_model, part, docs_npy, **one_epoch), "--resume"]) == 0
    assert max_diff(full / "rwkv-0.pth", part / "rwkv-0.pth") <= 1e-6


def test_second_sigint_exits_at_once_leaving_files_alone(small_model, docs_npy, tmp_path):
    proj = tmp_path / "twice"
    p = _start(flags(small_model, proj, docs_npy, epoch_steps=2, epoch_count=4), proj)
    _wait_for_rows(p, proj, 3)  # epoch 0 saved (rwkv-0.pth, last.ckpt), inside epoch 1
    before = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in proj.iterdir()
              if f.suffix in (".pth", ".ckpt")}
    p.send_signal(signal.SIGINT)
    # two signals sent back to back can merge into one: send the second once the first is handled
    seen = []
    while not any("SIGINT received" in l for l in seen[-1:]):
        seen.append(p.stderr.readline())
        assert seen[-1], "".join(seen)[-2000:]
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    err = "".join(seen) + err
    assert p.returncode == 130 and "Traceback" not in err
    after = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in proj.iterdir()
             if f.suffix in (".pth", ".ckpt")}
    assert after == before and "rwkv-0.pth" in after


# ---------- bad input ----------
def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rwkvft: error: ") and not any("Traceback" in l for l in err), err
    return err[-1]


@pytest.mark.parametrize("over, message", [
    ({"val_split": 1.0}, "--val_split must be in [0, 1)"),
    ({"val_every": 5}, "need validation data"),
    ({"save_best": 1}, "need validation data"),
    ({"keep_last": 2}, "--keep_last prunes step saves"),
    ({"max_steps": -1}, "--max_steps must be"),
    ({"val_split": 0.1, "val_file": "v.npy"}, "give one"),
])
def test_bad_validation_flags(capsys, small_model, docs_npy, tmp_path, over, message):
    proj = tmp_path / "p"
    assert message in _err(capsys, ["train", *flags(small_model, proj, docs_npy, **over)])
    assert not proj.exists()


def test_missing_val_file_is_named(capsys, small_model, docs_npy, tmp_path):
    msg = _err(capsys, ["train", *flags(small_model, tmp_path / "p", docs_npy,
                                        val_file=tmp_path / "nope.npy")])
    assert msg.startswith("rwkvft: error: --val_file: ") and "nope.npy" in msg


def test_val_split_of_one_document_is_refused(capsys, small_model, tokens_npy, tmp_path):
    proj = tmp_path / "one"
    msg = _err(capsys, ["train", *flags(small_model, proj, tokens_npy, dataload="get", val_split=0.1)])
    assert "leaves nothing to train on" in msg and "--val_file" in msg
    assert not list(proj.glob("rwkv-*"))


def test_sample_prompts_need_the_world_vocabulary(capsys, small_model, docs_npy, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("User: hi\\n\\nAssistant:\n")
    msg = _err(capsys, ["train", *flags(small_model, tmp_path / "run", docs_npy,
                                        sample_prompts=prompts)])
    assert "World-vocabulary" in msg


def test_read_prompts_lines_and_chats(tmp_path):
    from rwkvft.training.samples import read_prompts
    txt = tmp_path / "p.txt"
    txt.write_text("User: hi\\n\\nAssistant:\n\nplain prompt\n")
    assert read_prompts(txt) == ["User: hi\n\nAssistant:", "plain prompt"]
    chats = tmp_path / "p.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "Q1"},
                                              {"role": "assistant", "content": "A1"},
                                              {"role": "user", "content": "Q2"},
                                              {"role": "assistant", "content": "A2"}]}) + "\n"
                     + json.dumps({"text": "Once upon"}) + "\n")
    assert read_prompts(chats) == ["User: Q1\n\nAssistant: A1\n\nUser: Q2\n\nAssistant:", "Once upon"]


def test_eval_bad_input(capsys, small_model, docs_npy, tmp_path):
    base = ["eval", "--model", str(small_model), "--data_file", str(docs_npy)]
    assert "--compare needs --adapter" in _err(capsys, base + ["--compare"])
    assert "add --compare" in _err(capsys, base + ["--base", str(small_model)])
    assert "not found" in _err(capsys, base + ["--state", str(tmp_path / "s.pth")])
    assert "not found" in _err(capsys, ["eval", "--model", str(small_model),
                                        "--data_file", str(tmp_path / "none.npy")])


# ---------- the demo ----------
def test_demo_prints_validation_and_samples_and_eval_compare_improves(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "2", "--epoch_steps", "12"]) == 0
    printed = capsys.readouterr().out
    assert "validation loss by epoch:" in printed
    assert printed.count("sample after rwkv-") == 2  # one per epoch
    assert (out / "run" / "samples.md").read_text().count("## step ") == 2
    assert main(["eval", "--model", str(out / "demo-base.pth"), "--adapter",
                 str(out / "run" / "rwkv-1.pth"), "--data_file", str(out / "chat.jsonl"),
                 "--compare", "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["adapted"]["loss"] < got["base"]["loss"] - 1.0
    # the merged bf16 file against its base, as a user would check it
    assert main(["eval", "--model", str(out / "demo-merged.pth"), "--base", str(out / "demo-base.pth"),
                 "--compare", "--data_file", str(out / "chat.jsonl"),
                 "--train_config", str(out / "run" / "train_config.json"), "--json"]) == 0
    merged = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert merged["adapted"]["loss"] < merged["base"]["loss"] - 1.0
    assert merged["base"]["loss"] == pytest.approx(got["base"]["loss"], rel=1e-9)
    assert merged["loss"] == pytest.approx(got["adapted"]["loss"], abs=0.05)  # bf16 rounding
