"""--eval_tasks during training: each saved adapter's task scores in loss.jsonl (equal to scoring
the saved file afterwards), the plot, and --save_best on a task metric."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")  # the eval extra; in [test], so CI has it (tests/test_gpu_collection.py)

from eval_helpers import write_tasks
from rwkvft.cli import main
from rwkvft.evaluation.harness import RwkvLM
from rwkvft.evaluation.tasks import run_tasks, task_manager


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_checkpoint):
    root = tmp_path_factory.mktemp("train_tasks")
    rng = np.random.default_rng(0)
    docs = [np.append(rng.integers(1, 256, size=int(rng.integers(20, 40))), 0) for _ in range(12)]
    np.save(root / "docs.npy", np.concatenate(docs).astype(np.int64))
    return make_checkpoint(n_layer=2, n_embd=64, vocab_size=65536, seed=2), root / "docs.npy", write_tasks(root)


def _flags(model, proj, data, **over):
    f = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "numpy", "dataload": "pad",
         "ctx_len": 32, "micro_bsz": 2, "epoch_steps": 2, "epoch_count": 2, "lr_init": 5e-2,
         "lr_final": 5e-2, "accelerator": "cpu", "precision": "fp32", "peft": "lora",
         "peft_config": '{"r":4,"lora_alpha":8}', "progress": 0}
    f.update(over)
    return [x for k, v in f.items() for x in (f"--{k}", str(v))]


def test_each_save_is_scored_and_save_best_keeps_the_best_task_score(setup, tmp_path):
    model, data, tasks = setup
    proj = tmp_path / "run"
    assert main(["train", *_flags(model, proj, data, eval_tasks="h28_mc", eval_include_path=tasks,
                                  eval_limit=4, best_metric="h28_mc/acc"), "--save_best"]) == 0
    rows = [json.loads(line) for line in (proj / "loss.jsonl").read_text().splitlines()]
    scored = [r for r in rows if r.get("kind") == "tasks"]
    assert [r["adapter"] for r in scored] == ["rwkv-0.pth", "rwkv-1.pth"]
    assert all(set(r["scores"]) == {"h28_mc/acc"} for r in scored)
    assert scored[0]["step"] < scored[1]["step"]
    tm = task_manager(["h28_mc"], tasks)
    for r in scored:   # the in-training score is the saved file's score
        lm = RwkvLM(pretrained=model, adapter=proj / r["adapter"])
        assert run_tasks(lm, ["h28_mc"], limit=4, tm=tm)["h28_mc"]["acc"][0] == r["scores"]["h28_mc/acc"]
    best = max(scored, key=lambda r: r["scores"]["h28_mc/acc"])   # first of equals: kept on ties
    first_best = next(r for r in scored if r["scores"]["h28_mc/acc"] == best["scores"]["h28_mc/acc"])
    a = torch.load(proj / "rwkv-best.pth", weights_only=True)
    b = torch.load(proj / first_best["adapter"], weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (proj / "loss.png").stat().st_size > 0
    assert "tasks for rwkv-1.pth: h28_mc/acc" in (proj / "train_log.txt").read_text()


def test_task_flags_are_checked_before_training(setup, tmp_path, capsys):
    model, data, tasks = setup

    def one_error(*words, **over):
        proj = tmp_path / "bad"
        argv = ["train", *_flags(model, proj, data, **over)]
        save = over.pop("save_best", None)
        assert main(argv + (["--save_best"] if save else [])) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rwkvft: error: ") and all(w in err[0] for w in words), err
        assert not (proj / "rwkv-0.pth").exists()

    one_error("--save_best", eval_tasks="h28_mc", eval_include_path=tasks, best_metric="h28_mc/acc")
    one_error("--eval_tasks", eval_limit=3)
    one_error("TASK/METRIC", eval_tasks="h28_mc", eval_include_path=tasks, best_metric="acc", save_best=1)
    one_error("unknown task 'h28_mcq'", "h28_mc", eval_tasks="h28_mcq", eval_include_path=tasks)
    with pytest.MonkeyPatch.context() as mp:   # lm-eval not installed: the message names the extra
        mp.setitem(sys.modules, "lm_eval", None)
        mp.setitem(sys.modules, "lm_eval.evaluator", None)
        one_error("rwkvft[eval]", eval_tasks="h28_mc", eval_include_path=tasks)
