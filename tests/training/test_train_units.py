"""Trainer building blocks: LR schedules (hand-computed), chunked loss, config resolution."""
import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F

from rwkvft.config import TrainConfig, add_train_arguments, resolve_config
from rwkvft.errors import UserError
from rwkvft.training.loss import masked_lm_loss
from rwkvft.training.schedule import lr_at


# ---------- schedules ----------
def test_cos_decay_hand_values():
    # T=10, no warmup, 1e-3 -> 1e-4: t=0 peak, t=5 midpoint, t>=10 final
    assert lr_at(0, 10, 1e-3, 1e-4, 0) == pytest.approx(1e-3)
    assert lr_at(5, 10, 1e-3, 1e-4, 0) == pytest.approx(5.5e-4)
    assert lr_at(10, 10, 1e-3, 1e-4, 0) == pytest.approx(1e-4)
    assert lr_at(50, 10, 1e-3, 1e-4, 0) == pytest.approx(1e-4)


def test_cos_decay_warmup_then_cosine():
    # W=4: 1/4, 2/4, 3/4, 4/4 of lr_init, then cosine over the remaining 6 steps
    assert [lr_at(t, 10, 1.0, 0.0, 4) for t in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_at(4, 10, 1.0, 0.0, 4) == pytest.approx(1.0)
    assert lr_at(7, 10, 1.0, 0.0, 4) == pytest.approx(0.5)


def test_constant_when_final_unset():
    assert [lr_at(t, 100, 2e-5, -1, 0) for t in range(0, 101, 7)] == pytest.approx([2e-5] * 15)


def test_wsd_hand_values():
    # T=20, W=2, decay_frac 0.25 -> decay starts at 15, linear to 0 (lr_final unset) by 20
    assert lr_at(0, 20, 1.0, -1, 2, "wsd", 0.25) == pytest.approx(0.5)
    assert lr_at(1, 20, 1.0, -1, 2, "wsd", 0.25) == pytest.approx(1.0)
    assert lr_at(14, 20, 1.0, -1, 2, "wsd", 0.25) == pytest.approx(1.0)
    assert lr_at(15, 20, 1.0, -1, 2, "wsd", 0.25) == pytest.approx(1.0)
    assert lr_at(17, 20, 1.0, -1, 2, "wsd", 0.25) == pytest.approx(0.6)
    assert lr_at(20, 20, 1.0, 0.1, 2, "wsd", 0.25) == pytest.approx(0.1)


# ---------- chunked loss ----------
@pytest.mark.parametrize("head_trains", [True, False], ids=["trainable_head", "frozen_head"])
@pytest.mark.parametrize("chunk", [1, 5, 7, 64])
def test_chunked_loss_equals_full_loss_and_grads(chunk, head_trains):
    """Both backward routes (checkpointed chunks for a trainable head, the gradient made in the
    forward for a frozen one) give the one-shot loss's value and gradients."""
    torch.manual_seed(0)
    B, T, C, V = 2, 6, 8, 11
    head = torch.nn.Linear(C, V, bias=False).requires_grad_(head_trains)
    h = torch.randn(B, T, C, requires_grad=True)
    targets = torch.randint(0, V, (B, T))
    mask = (torch.rand(B, T) > 0.3).float()
    mask[0, 0] = 1.0
    s, n = masked_lm_loss(head, h, targets, mask, chunk=chunk)
    (s / n).backward()
    g_h, g_w = h.grad.clone(), head.weight.grad
    h.grad = None
    head.weight.grad = None
    ce = F.cross_entropy(head(h).reshape(-1, V), targets.reshape(-1), reduction="none")
    ref = (ce * mask.reshape(-1)).sum() / mask.sum()
    ref.backward()
    assert n == mask.sum()
    assert torch.allclose(s / n, ref, atol=1e-6)
    assert torch.allclose(g_h, h.grad, atol=1e-6)
    if head_trains:
        assert torch.allclose(g_w, head.weight.grad, atol=1e-6)
    else:
        assert g_w is None and head.weight.grad is None


@pytest.mark.parametrize("head_trains, head_calls", [(True, 2), (False, 1)])
def test_a_frozen_head_runs_once_per_chunk(head_trains, head_calls):
    """With a frozen head the backward reuses the gradient made in the forward: the head (the
    step's largest matmul) runs once per chunk, not again in the backward as checkpointing does."""
    head = torch.nn.Linear(8, 11, bias=False).requires_grad_(head_trains)
    calls = []
    head.register_forward_hook(lambda *_: calls.append(1))
    h = torch.randn(1, 9, 8, requires_grad=True)
    s, _ = masked_lm_loss(head, h, torch.randint(0, 11, (1, 9)), torch.ones(1, 9), chunk=4)
    (2.5 * s).backward()
    assert len(calls) == 3 * head_calls and h.grad.abs().sum() > 0


def test_loss_all_masked_is_zero_count():
    head = torch.nn.Linear(4, 5, bias=False)
    s, n = masked_lm_loss(head, torch.randn(1, 3, 4), torch.zeros(1, 3, dtype=torch.long),
                          torch.zeros(1, 3))
    assert float(s) == 0.0 and float(n) == 0.0


# ---------- config ----------
def _parse(argv):
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return p.parse_args(argv)


TUTORIAL = ["--load_model", "m.pth", "--proj_dir", "out", "--data_file", "d.jsonl",
            "--vocab_size", "65536", "--data_type", "jsonl", "--n_layer", "24", "--n_embd", "2048",
            "--ctx_len", "4096", "--micro_bsz", "4", "--epoch_steps", "1000", "--epoch_count", "4",
            "--epoch_save", "1", "--lr_init", "1e-5", "--lr_final", "1e-5", "--accelerator", "gpu",
            "--precision", "bf16", "--devices", "4", "--strategy", "deepspeed_stage_1",
            "--grad_cp", "1", "--my_testing", "x070", "--peft", "miss", "--peft_config", '{"r":64}']


def test_tutorial_flags_parse_with_same_meaning():
    cfg = resolve_config(_parse(TUTORIAL))
    assert (cfg.n_layer, cfg.n_embd, cfg.ctx_len, cfg.micro_bsz) == (24, 2048, 4096, 4)
    assert (cfg.epoch_steps, cfg.epoch_count, cfg.epoch_save) == (1000, 4, 1)
    assert cfg.strategy == "deepspeed_stage_1" and cfg.grad_cp == 1 and cfg.devices == 4
    assert cfg.peft == "miss" and json.loads(cfg.peft_config) == {"r": 64}
    assert cfg.my_testing == "x070" and cfg.precision == "bf16"


def test_config_file_then_flags_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("load_model: a.pth\ndata_file: d.jsonl\nctx_len: 256\nmicro_bsz: 2\n"
                 "peft_config: {r: 16}\n")
    cfg = resolve_config(_parse(["--config", str(f), "--micro_bsz", "3"]))
    assert cfg.ctx_len == 256 and cfg.micro_bsz == 3 and json.loads(cfg.peft_config) == {"r": 16}


@pytest.mark.parametrize("argv,msg", [
    (["--data_file", "d"], "--load_model is required"),
    (["--load_model", "m", "--data_file", "d", "--ctx_len", "0"], "--ctx_len must be positive"),
    (["--load_model", "m", "--data_file", "d", "--precision", "fp8"], "--precision 'fp8'"),
    (["--load_model", "m", "--data_file", "d", "--strategy", "fsdp"], "--strategy 'fsdp'"),
    (["--load_model", "m", "--data_file", "d", "--peft", "dora"], "--peft 'dora' is not supported"),
    (["--load_model", "m", "--data_file", "d", "--resume", "--overwrite"], "contradict"),
])
def test_config_errors(argv, msg):
    with pytest.raises(UserError, match=msg.replace("(", r"\(")):
        resolve_config(_parse(argv))


def test_config_file_unknown_key(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"load_model": "a", "data_file": "d", "ctx_lenn": 5}))
    with pytest.raises(UserError, match="unknown setting.*ctx_lenn"):
        resolve_config(_parse(["--config", str(f)]))


def test_every_dataclass_field_is_a_flag():
    import dataclasses
    ns = _parse([])
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    flags = {a.dest: a.help for a in p._actions}
    for f in dataclasses.fields(TrainConfig):
        assert flags.get(f.name), f"--{f.name} has no help text"  # `train --help` documents it
