"""`rwkvft train --adapter_init`: training continues from an imported adapter (an HF peft folder
exported from an earlier run), starting at that adapter's loss, not from scratch."""
from __future__ import annotations

import json
from pathlib import Path

import lightning  # noqa: F401  imported at collection (see test_train.py)
import pytest
import torch
import torch.nn.functional as F

from rwkvft.cli import main

TEXTS = ["User: What colour is the sky on Velmora?\n\nAssistant: The sky on Velmora is green at noon.",
         "The river Tarn flows north past the seven hills of Velmora into the cold sea."]


@pytest.fixture(scope="module")
def setup(make_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    data = root / "facts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 4), encoding="utf-8")
    model = make_checkpoint(n_layer=2, n_embd=128, vocab_size=65536, seed=3, dtype=torch.bfloat16)
    return root, model, data


def flags(model, proj, data, **over):
    f = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "jsonl",
         "ctx_len": 32, "micro_bsz": 2, "epoch_steps": 4, "epoch_count": 1, "lr_init": 5e-3,
         "accelerator": "cpu", "precision": "fp32", "peft": "miss", "peft_config": '{"r":8}',
         "progress": 0, "random_seed": 1}
    f.update(over)
    return ["train"] + [x for k, v in f.items() for x in (f"--{k}", str(v))]


def losses(proj: Path) -> list[float]:
    return [json.loads(l)["loss"] for l in (proj / "loss.jsonl").read_text().splitlines()]


def first_batch_loss(model_path, argv) -> float:
    """Loss of a merged model on the first batch the trainer sees (plain cross-entropy)."""
    from rwkvft.config import add_train_arguments, resolve_config
    from rwkvft.formats import load_model
    from rwkvft.training.run import build_data, plan_run
    import argparse
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    cfg = resolve_config(p.parse_args(argv[1:]))
    ds = build_data(plan_run(cfg), 65536)[0]
    ds.set_epoch(0)
    batch = ds.collate([ds[i] for i in range(cfg.micro_bsz)])
    model = load_model(model_path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(batch["input_ids"])
    logits = (logits[0] if isinstance(logits, tuple) else logits).float()
    ce = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), reduction="none")
    return float((ce * batch["mask"].flatten()).sum() / batch["mask"].sum())


def test_training_continues_from_imported_hf_peft_adapter(setup):
    root, model, data = setup
    assert main(flags(model, root / "a", data, epoch_count=3)) == 0
    assert main(["export", "--base", str(model), "--adapter", str(root / "a" / "rwkv-2.pth"),
                 "--format", "hf-peft", "--output", str(root / "a-adapter")]) == 0
    assert main(["merge", "--base", str(model), "--adapter", str(root / "a-adapter"),
                 "--output", str(root / "a-merged.pth"), "--dtype", "fp32"]) == 0
    init_argv = flags(model, root / "b", data, lr_init=1e-6, epoch_steps=2,
                      adapter_init=root / "a-adapter")
    assert main(init_argv) == 0
    fresh_argv = flags(model, root / "c", data, lr_init=1e-6, epoch_steps=2)
    assert main(fresh_argv) == 0
    a, b, c = losses(root / "a"), losses(root / "b"), losses(root / "c")
    expected = first_batch_loss(root / "a-merged.pth", init_argv)
    assert b[0] == pytest.approx(expected, rel=1e-4)
    assert b[0] < c[0] - 0.5 * (a[0] - min(a))       # not from scratch
    assert c[0] == pytest.approx(first_batch_loss(model, fresh_argv), rel=1e-4)
    log = (root / "b" / "train_log.txt").read_text()
    assert "adapter_init: loaded 12 tensors (12 adapter matrices)" in log


def test_adapter_init_of_another_method_is_refused(setup, capsys):
    root, model, data = setup
    assert main(flags(model, root / "d", data, epoch_steps=1)) == 0
    argv = flags(model, root / "e", data, peft="lora", peft_config='{"r":4}',
                 adapter_init=root / "d" / "rwkv-0.pth")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a miss default adapter but --peft/--peft_config ask for lora" in err[0]
