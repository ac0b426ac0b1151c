"""The real `train` entry point end to end on CPU: tutorial flags, outputs, merge, resume, DDP, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning  # noqa: F401  imported at collection: its log handler then binds the session's
import numpy as np  # stderr, not one test's capture (which is closed after that test)
import pytest
import torch

from rwkvft.cli import main

REPO = Path(__file__).resolve().parents[2]
FACTS = [
    "User: What colour is the sky on Velmora?\n\nAssistant: The sky on Velmora is green at noon.",
    "User: Who rules Lumeria?\n\nAssistant: Queen Ysolde rules Lumeria from the harbour palace.",
    "The river Tarn flows north past the seven hills of Velmora into the cold sea.",
]


@pytest.fixture(scope="module")
def world_model(make_checkpoint):
    """A random perturbed RWKV-7 with the World vocabulary (the tokenizer needs V = 65536)."""
    return make_checkpoint(n_layer=2, n_embd=64 * 2, vocab_size=65536, seed=3, dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def facts_jsonl(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "facts.jsonl"
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in FACTS * 4), encoding="utf-8")
    return p


def tutorial_flags(model, proj, data, **over):
    """The tutorial's miss.sh flags (paths changed; CPU, fp32, small sizes)."""
    flags = {"load_model": model, "proj_dir": proj, "data_file": data, "vocab_size": 65536,
             "data_type": "jsonl", "n_layer": 2, "n_embd": 128, "ctx_len": 32, "micro_bsz": 2,
             "epoch_steps": 6, "epoch_count": 3, "epoch_save": 1, "lr_init": 5e-3,
             "lr_final": 5e-3, "accelerator": "cpu", "precision": "fp32", "devices": 1,
             "strategy": "auto", "grad_cp": 1, "my_testing": "x070", "peft": "miss",
             "peft_config": '{"r":32}'}
    flags.update(over)
    out = []
    for k, v in flags.items():
        out += [f"--{k}", str(v)]
    return out


def _losses(proj: Path) -> list[float]:
    return [json.loads(l)["loss"] for l in (proj / "loss.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tutorial_run(world_model, facts_jsonl, tmp_path_factory):
    proj = tmp_path_factory.mktemp("run") / "miss"
    merged = proj.parent / "merged.pth"
    argv = tutorial_flags(world_model, proj, facts_jsonl) + ["--merge_output", str(merged),
                                                             "--progress", "0"]
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *argv], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return proj, merged, r


def _real_tokens(data, epochs: int, **kw) -> int:
    """Non-padding tokens the trainer sees in `epochs` epochs (pad mode), counted from the data."""
    from rwkvft.data import DataConfig, build_dataset
    ds = build_dataset(DataConfig(data_file=str(data), data_type="jsonl", dataload="pad", **kw))
    total = 0
    for e in range(epochs):
        ds.set_epoch(e)
        total += sum(len(ds[i]["input_ids"]) for i in range(len(ds)))
    return total


def test_tutorial_flags_train_and_write_outputs(tutorial_run, facts_jsonl):
    proj, merged, r = tutorial_run
    for name in ("rwkv-0.pth", "rwkv-1.pth", "rwkv-2.pth", "adapter_config.json",
                 "train_log.txt", "loss.jsonl", "loss.png", "last.ckpt", "train_config.json"):
        assert (proj / name).is_file(), name
    assert merged.is_file()
    adapter = torch.load(proj / "rwkv-2.pth", weights_only=True)
    assert set(adapter) == {f"blocks.{l}.{m}.miss" for l in range(2) for m in
                            ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")}
    assert adapter["blocks.0.att.key.miss"].shape == (32, 128)
    log = (proj / "train_log.txt").read_text()
    assert "trainable parameters" in log and log.count("\nepoch ") == 3
    rows = [json.loads(l) for l in (proj / "loss.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 19))
    # tokens are real tokens: the samples' own lengths (the documents are shorter than ctx_len 32)
    assert rows[-1]["tokens"] == _real_tokens(facts_jsonl, ctx_len=32, micro_bsz=2, epoch_steps=6, epochs=3)
    assert rows[-1]["tokens"] < 18 * 2 * 32 and all(row["tokens_per_s"] > 0 for row in rows)
    assert all(0 <= row["padding"] < 1 for row in rows)
    assert "padding " in log.split("\nepoch 2:")[1].splitlines()[0]
    assert (proj / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_falls_on_memorizable_data(tutorial_run):
    losses = _losses(tutorial_run[0])
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5, losses


def _pip_loss(pip_rwkv, path: Path, texts: list[str]) -> float:
    from rwkvft.data.tokenizer import WorldTokenizer
    model = pip_rwkv(path)
    tok = WorldTokenizer()
    total, n = 0.0, 0
    for t in texts:
        ids = tok.encode(t)
        logits, _ = model.forward(ids, None, full_output=True)
        ce = torch.nn.functional.cross_entropy(logits[:-1].float(), torch.tensor(ids[1:]), reduction="sum")
        total, n = total + float(ce), n + len(ids) - 1
    return total / n


def test_merged_model_scores_better_in_rwkv_package(tutorial_run, world_model, pip_rwkv):
    _, merged, _ = tutorial_run
    base_loss = _pip_loss(pip_rwkv, world_model, FACTS)
    merged_loss = _pip_loss(pip_rwkv, merged, FACTS)
    assert merged_loss < base_loss - 0.5, (base_loss, merged_loss)
    sd = torch.load(merged, weights_only=True)
    base = torch.load(world_model, weights_only=True)
    assert list(sd) == list(base) and all(v.dtype == torch.bfloat16 for v in sd.values())


# ---------- resume and several processes: token data with a small vocabulary (fast) ----------
# (fixtures small_model and tokens_npy live in conftest.py)


def _small_flags(model, proj, data, **over):
    flags = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "numpy",
             "ctx_len": 32, "micro_bsz": 2, "epoch_steps": 3, "epoch_count": 4, "lr_init": 1e-2,
             "lr_final": 1e-3, "warmup_steps": 2, "accelerator": "cpu", "precision": "fp32",
             "peft": "lora", "peft_config": '{"r":4,"lora_alpha":8}', "progress": 0}
    flags.update(over)
    return [x for k, v in flags.items() for x in (f"--{k}", str(v))]


def test_resume_gives_the_uninterrupted_result(small_model, tokens_npy, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *_small_flags(small_model, full, tokens_npy)]) == 0
    assert main(["train", *_small_flags(small_model, part, tokens_npy, my_exit=2)]) == 0
    assert not (part / "rwkv-3.pth").exists() and (part / "rwkv-1.pth").exists()
    assert main(["train", *_small_flags(small_model, part, tokens_npy), "--resume"]) == 0
    a = torch.load(full / "rwkv-3.pth", weights_only=True)
    b = torch.load(part / "rwkv-3.pth", weights_only=True)
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k
    assert _losses(full) == pytest.approx(_losses(part), rel=1e-5)


def test_ddp_two_processes_on_cpu(small_model, tokens_npy, tmp_path):
    proj = tmp_path / "ddp"
    argv = _small_flags(small_model, proj, tokens_npy, devices=2, strategy="ddp", epoch_count=1)
    r = subprocess.run([sys.executable, "-m", "rwkvft", "train", *argv], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [l for l in (proj / "train_log.txt").read_text().splitlines() if "checksum per rank" in l]
    sums = json.loads(line[0].split(": ", 1)[1])
    assert len(sums) == 2 and sums[0] == sums[1]
    rows = [json.loads(l) for l in (proj / "loss.jsonl").read_text().splitlines()]
    assert rows[-1]["tokens"] == 3 * 2 * 32 * 2  # epoch = epoch_steps x micro_bsz x devices samples
    # issue 30 item 9: the summary once (rank 0), no library deprecation warnings per rank
    assert r.stdout.count("logs: ") == 1 and "deprecated" not in r.stderr, r.stdout + r.stderr


# ---------- bad input ----------
def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # progress bars may precede it; the error itself is one line, no traceback
    assert err[-1].startswith("rwkvft: error: ") and not any("Traceback" in l for l in err), err
    return err[-1]


def test_missing_data_file(capsys, small_model, tmp_path):
    msg = _err(capsys, ["train", *_small_flags(small_model, tmp_path / "p", tmp_path / "nope.npy")])
    assert "nope.npy" in msg and "not found" in msg


def test_missing_model(capsys, tokens_npy, tmp_path):
    msg = _err(capsys, ["train", *_small_flags(tmp_path / "none.pth", tmp_path / "p", tokens_npy)])
    assert "none.pth" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_proj_dir_not_writable(capsys, small_model, tokens_npy, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    msg = _err(capsys, ["train", *_small_flags(small_model, ro / "x", tokens_npy)])
    assert "not writable" in msg


def test_proj_dir_is_a_file(capsys, small_model, tokens_npy, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert "is a file" in _err(capsys, ["train", *_small_flags(small_model, f, tokens_npy)])


def test_deepspeed_on_cpu_is_refused(capsys, small_model, tokens_npy, tmp_path):
    msg = _err(capsys, ["train", *_small_flags(small_model, tmp_path / "p", tokens_npy,
                                               strategy="deepspeed_stage_1")])
    assert "needs NVIDIA GPUs" in msg and "ddp" in msg


def test_sizes_that_contradict_the_checkpoint(capsys, small_model, tokens_npy, tmp_path):
    msg = _err(capsys, ["train", *_small_flags(small_model, tmp_path / "p", tokens_npy, n_embd=2048)])
    assert "n_embd" in msg and "128" in msg


def test_merge_output_equal_to_base_is_refused_before_training(capsys, small_model, tokens_npy, tmp_path):
    before = small_model.read_bytes()
    msg = _err(capsys, ["train", *_small_flags(small_model, tmp_path / "p", tokens_npy),
                        "--merge_output", str(small_model)])
    assert "is the base model" in msg
    assert not (tmp_path / "p").exists() and small_model.read_bytes() == before


def test_existing_run_is_not_overwritten(capsys, small_model, tokens_npy, tmp_path):
    proj = tmp_path / "p"
    assert main(["train", *_small_flags(small_model, proj, tokens_npy, epoch_count=1)]) == 0
    before = (proj / "rwkv-0.pth").read_bytes()
    msg = _err(capsys, ["train", *_small_flags(small_model, proj, tokens_npy, epoch_count=1)])
    assert "already holds a run" in msg and "--resume" in msg
    assert (proj / "rwkv-0.pth").read_bytes() == before


def test_resume_with_damaged_checkpoint(capsys, small_model, tokens_npy, tmp_path):
    proj = tmp_path / "p"
    assert main(["train", *_small_flags(small_model, proj, tokens_npy, epoch_count=1)]) == 0
    (proj / "last.ckpt").write_bytes((proj / "last.ckpt").read_bytes()[:100])
    msg = _err(capsys, ["train", *_small_flags(small_model, proj, tokens_npy, epoch_count=2), "--resume"])
    assert "last.ckpt cannot be read" in msg and "damaged" in msg


def test_resume_without_a_run(capsys, small_model, tokens_npy, tmp_path):
    msg = _err(capsys, ["train", *_small_flags(small_model, tmp_path / "new", tokens_npy), "--resume"])
    assert "nothing to resume" in msg


def test_tutorial_miss_sh_ctx_len_4096_on_short_chat_records(world_model, tmp_path):
    """miss.sh's --ctx_len 4096 --micro_bsz 4 on chat records far shorter than 4096 tokens trains
    and saves as it is: ctx_len is a cap, batches are padded only to their longest sample."""
    from rwkvft.data import SAMPLE_JSONL
    proj = tmp_path / "miss"
    argv = tutorial_flags(world_model, proj, SAMPLE_JSONL, ctx_len=4096, micro_bsz=4, epoch_steps=2,
                          epoch_count=2, lr_init=1e-5, lr_final=1e-5, peft_config='{"r":64}')
    r = subprocess.run([sys.executable, str(REPO / "train.py"), *argv, "--progress", "0"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (proj / "rwkv-1.pth").is_file() and (proj / "last.ckpt").is_file()
    log = (proj / "train_log.txt").read_text()
    assert "ctx_len 4096 is a cap: the longest document has 59 tokens, the longest sample 58" in log
    assert "at most 64 positions" in log
    rows = [json.loads(l) for l in (proj / "loss.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert rows[-1]["tokens"] == _real_tokens(SAMPLE_JSONL, ctx_len=4096, micro_bsz=4, epoch_steps=2, epochs=2)


def test_nan_loss_stops_and_keeps_last_adapter(capsys, small_model, tokens_npy, tmp_path, monkeypatch):
    # Poison a weight of the real model from step 4 on: the forward itself turns non-finite and
    # the module's own check in training_step has to stop the run.
    from rwkvft.training import module as mod

    def poison(self, batch, batch_idx):
        if self.global_step >= 4:
            with torch.no_grad():
                self.model.ln_out.weight.fill_(float("nan"))

    monkeypatch.setattr(mod.FineTuneModule, "on_train_batch_start", poison, raising=False)
    proj = tmp_path / "p"
    msg = _err(capsys, ["train", *_small_flags(small_model, proj, tokens_npy)])
    assert "loss is nan at step 4" in msg and "rwkv-0.pth" in msg
    assert torch.load(proj / "rwkv-0.pth", weights_only=True)


def test_disk_full_keeps_previous_adapter(capsys, small_model, tokens_npy, tmp_path, monkeypatch):
    import rwkvft.formats.adapter_file as aio
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # the bytes land in the temp file, then the disk "fills up"
        if ".rwkv-1.pth." in str(f):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(aio.torch, "save", failing_save)
    proj = tmp_path / "p"
    msg = _err(capsys, ["train", *_small_flags(small_model, proj, tokens_npy)])
    assert "No space left on device" in msg and "rwkv-0.pth" in msg and "intact" in msg
    assert sorted(p.name for p in proj.glob("rwkv-*")) == ["rwkv-0.pth"]
    assert not list(proj.glob(".*.tmp"))
    assert torch.load(proj / "rwkv-0.pth", weights_only=True)


def test_generate_with_adapter_equals_merged_fp32(tutorial_run, world_model, tmp_path, capsys):
    proj, _, _ = tutorial_run
    merged32 = tmp_path / "m32.pth"
    assert main(["merge", "--base", str(world_model), "--adapter", str(proj / "rwkv-2.pth"),
                 "--output", str(merged32), "--dtype", "fp32"]) == 0
    capsys.readouterr()
    common = ["--prompt", "User: Who rules Lumeria?\n\nAssistant:", "--max_tokens", "8",
              "--temperature", "0"]
    assert main(["generate", "--model", str(world_model), "--adapter", str(proj / "rwkv-2.pth"), *common]) == 0
    with_adapter = capsys.readouterr().out
    assert main(["generate", "--model", str(merged32), *common]) == 0
    assert capsys.readouterr().out == with_adapter
    assert main(["generate", "--model", str(world_model), *common]) == 0
    assert capsys.readouterr().out != with_adapter


def test_time_part_skips_unused_layer0_value_residual(make_checkpoint):
    from rwkvft.adapters import inject, parse_peft
    from rwkvft.formats import load_model
    model = load_model(make_checkpoint(n_layer=2, n_embd=128, vocab_size=256, seed=5))
    names = inject(model, parse_peft("miss", '{"r":16}'), ["time"])
    assert "blocks.1.att.v0" in names and "blocks.0.att.w1" in names
    assert not {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"} & set(names)
