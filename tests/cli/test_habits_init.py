"""Issue 30, item 8: `rwkvft init` makes a model every method can train (state tuning included),
and a run whose trainable tensors get exactly zero gradient says so."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rwkvft.cli import main
from rwkvft.data import SAMPLE_JSONL
from rwkvft.models.init import START_GAIN, init_state_dict, new_config
from rwkvft.training.console import ZeroGradWatch


def _init(tmp_path, name, *extra):
    out = tmp_path / name
    assert main(["init", "--n_layer", "2", "--n_embd", "128", "--out", str(out), *extra]) == 0
    return out


def test_init_perturbs_only_the_zeroed_outputs(tmp_path, capsys):
    sd = torch.load(_init(tmp_path, "t.pth"), weights_only=True)
    official = init_state_dict(new_config(2, 128), seed=0)
    moved = {k for k in sd if not torch.equal(sd[k], official[k])}
    assert moved == {f"blocks.{l}.{n}" for l in range(2) for n in ("att.output.weight", "ffn.value.weight")}
    W = sd["blocks.1.att.output.weight"].float()
    assert torch.allclose(W @ W.T, START_GAIN ** 2 * torch.eye(128), atol=START_GAIN ** 2 * 0.05)
    V = sd["blocks.0.ffn.value.weight"].float()          # (C, 4C): orthogonal rows
    assert torch.allclose(V @ V.T, START_GAIN ** 2 * torch.eye(128), atol=START_GAIN ** 2 * 0.05)
    off = torch.load(_init(tmp_path, "o.pth", "--official"), weights_only=True)
    assert all(torch.equal(off[k], official[k]) for k in official)
    assert "official init" in capsys.readouterr().out


def _state_run(model, proj, steps: int):
    """State tuning in the demo's settings (its data, ctx_len, micro_bsz, the method's LR)."""
    return main(["train", "--load_model", str(model), "--data_file", str(SAMPLE_JSONL),
                 "--proj_dir", str(proj), "--ctx_len", "64", "--micro_bsz", "4",
                 "--epoch_steps", str(steps), "--epoch_count", "1", "--peft", "state",
                 "--accelerator", "cpu", "--progress", "0"])


def _compare(capsys, model, adapter) -> float:
    capsys.readouterr()
    assert main(["eval", "--model", str(model), "--adapter", str(adapter), "--data_file",
                 str(SAMPLE_JSONL), "--ctx_len", "64", "--compare", "--json"]) == 0
    import json
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return out["adapted"]["loss"] - out["base"]["loss"]


def test_state_tuning_on_an_init_model_lowers_the_loss(tmp_path, capsys):
    model = _init(tmp_path, "init.pth")
    assert _state_run(model, tmp_path / "run", 8) == 0
    out = capsys.readouterr().out
    assert "zero gradient" not in out
    state = torch.load(tmp_path / "run" / "rwkv-0.pth", weights_only=True)
    assert all(t.abs().max() > 0 for t in state.values())
    assert _compare(capsys, model, tmp_path / "run" / "rwkv-0.pth") < -0.01


def test_state_tuning_on_the_official_init_says_it_learns_nothing(tmp_path, capsys):
    model = _init(tmp_path, "official.pth", "--official")
    assert _state_run(model, tmp_path / "run", 3) == 0
    out = capsys.readouterr().out
    assert out.count("exactly zero gradient") == 1, out
    assert "exactly zero gradient" in (tmp_path / "run" / "train_log.txt").read_text()


class _Log:
    def __init__(self):
        self.lines = []

    def say(self, text):
        self.lines.append(text)


def _module(*grads):
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(3))
        p.grad = g
        params.append(p)
    return SimpleNamespace(parameters=lambda: iter(params))


@pytest.mark.parametrize("grads, warns", [
    ((torch.zeros(3), torch.zeros(3)), True),
    ((torch.zeros(3), torch.tensor([0.0, 1e-30, 0.0])), False),   # tiny is not zero
    ((None, None), False),                                         # not in .grad (ZeRO): unknown
])
def test_zero_grad_watch(grads, warns):
    log = _Log()
    watch = ZeroGradWatch(log, steps=3)
    for _ in range(5):
        watch.on_before_optimizer_step(None, _module(*grads), None)
    assert len(log.lines) == (1 if warns else 0)


def test_zero_grad_watch_is_quiet_once_something_learned():
    log = _Log()
    watch = ZeroGradWatch(log, steps=2)
    watch.on_before_optimizer_step(None, _module(torch.ones(3)), None)
    for _ in range(4):
        watch.on_before_optimizer_step(None, _module(torch.zeros(3)), None)
    assert log.lines == []
