"""--train_type infctx: a sample run as chunks carrying the RNN state.

- full BPTT: loss and every trainable gradient equal the one-pass ones (RWKV-7 and RWKV-6, every
  adapter method, chunk lengths that do and do not divide the sample, masks across boundaries);
- truncated BPTT: gradients equal a hand-written loop over chunks with detached states;
- the chunks are cut at the right places, the last one is the remainder (never padded);
- `rwkvft train --train_type infctx` trains like the unchunked run, saves and resumes exactly,
  in one process and under DDP;
- bad flags are one-line errors.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rwkvft.adapters import inject, parse_peft
from rwkvft.cli import main
from rwkvft.training.infctx import infctx_loss, lm_loss
from rwkvft.training.loss import masked_lm_loss

from conftest import rel_err

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None

# One row per method to check: (model version, --peft, --peft_config, --train_parts).
CASES = [
    ("x070", "miss", {"r": 16}, ["ln"]),
    ("x070", "miss", {"r": 16, "mode": "bat"}, []),
    ("x070", "miss", {"r": 16, "mode": "mini", "mini_r": 32}, []),
    ("x070", "lora", {"r": 4, "lora_alpha": 8}, ["ln", "time"]),
    ("x070", "pissa", {"r": 4}, []),
    ("x060", "miss", {"r": 16}, ["time"]),
    ("x060", "lora", {"r": 4, "lora_alpha": 8}, ["ln"]),
    ("x070", "state", {}, []),
    ("x060", "state", {}, []),
    ("x070", "none", {}, []),
]
# (sample length T, chunk length C): C divides T; C does not (last chunk 5 tokens); one chunk + 5
SPLITS = [(48, 16), (37, 16), (37, 32)]
TOL = {torch.float64: 1e-6, torch.float32: 1e-4}   # relative, per tensor (max |diff| / max |ref|)
VOCAB = 256


def _case_id(case):
    version, method, pc, parts = case
    return f"{version}-{method}-{pc.get('mode', 'default')}"


_SD: dict = {}


def _state_dict(version: str):
    from rwkvft.models.init import new_config, random_state_dict
    if version not in _SD:
        _SD[version] = random_state_dict(new_config(2, 128, VOCAB, version=version), seed=2)
    return _SD[version]


def _model(case, dtype=torch.float32, op="chunked", grad_cp=False, quant="none"):
    """The case's model with its adapter injected and moved off its identity init; the same
    weights every call (seeded), so two calls give two copies of one model."""
    from rwkvft.models import model_from_state_dict
    version, method, pc, parts = case
    torch.manual_seed(0)            # LoRA's A init and PiSSA's randomized SVD draw from it
    model = model_from_state_dict(_state_dict(version), dtype=dtype).train()
    model.set_runtime(op=op, grad_cp=grad_cp)
    names = inject(model, parse_peft(method, pc), parts)
    if quant != "none":
        from rwkvft.adapters.quant import quantize_base
        quantize_base(model, quant, None)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].add_(0.01 * torch.randn_like(params[n]))
    return model, names


def _batch(T, dtype, seed=3):
    """Two samples of T tokens; the mask drops random tokens, a span across the first chunk
    boundaries, and the second sample's tail (padding)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, VOCAB, (2, T + 1), generator=g)
    mask = (torch.rand(2, T, generator=g) > 0.25).to(dtype)
    mask[0, 12:20] = 0                   # qa-style ignored span crossing the boundary at 16
    mask[1, T - 9:] = 0                  # right padding
    return idx[:, :-1], idx[:, 1:], mask


def _loss_and_grads(model, names, loss_fn):
    total, count = loss_fn(model)
    loss = total / count
    loss.backward()
    params = dict(model.named_parameters())
    grads = {n: params[n].grad.clone() for n in names}
    assert all(g.abs().sum() > 0 for n, g in grads.items() if not n.endswith("lora_A")), \
        "a trainable tensor got no gradient"
    return loss.detach(), grads


def _assert_same(a, b, tol):
    (la, ga), (lb, gb) = a, b
    assert abs(float(la - lb)) <= tol * abs(float(lb)), (float(la), float(lb))
    assert ga.keys() == gb.keys()
    for n in ga:
        assert rel_err(ga[n], gb[n]) <= tol, (n, rel_err(ga[n], gb[n]))


def _one_pass(inputs, targets, mask):
    return lambda m: lm_loss(m, inputs, targets, mask, head_chunk=16)


def _chunked(inputs, targets, mask, C, bptt):
    return lambda m: infctx_loss(m, inputs, targets, mask, C, bptt, head_chunk=16)


# ----------------------------------------------------------------------------- full BPTT
@pytest.mark.parametrize("T,C", SPLITS)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_full_bptt_equals_one_pass(case, T, C):
    batch = _batch(T, torch.float32)
    whole = _loss_and_grads(*_model(case), _one_pass(*batch))
    chunked = _loss_and_grads(*_model(case), _chunked(*batch, C, "full"))
    _assert_same(chunked, whole, TOL[torch.float32])


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[5], CASES[7]], ids=_case_id)
def test_full_bptt_equals_one_pass_fp64(case):
    T, C = 37, 16
    batch = _batch(T, torch.float64)
    whole = _loss_and_grads(*_model(case, torch.float64), _one_pass(*batch))
    chunked = _loss_and_grads(*_model(case, torch.float64), _chunked(*batch, C, "full"))
    _assert_same(chunked, whole, TOL[torch.float64])


@pytest.mark.parametrize("variant", ["grad_cp", "reference_op",
                                     pytest.param("int8", marks=pytest.mark.skipif(
                                         not HAS_BNB, reason="needs bitsandbytes"))])
def test_full_bptt_with_grad_cp_reference_op_and_quant(variant):
    kw = {"grad_cp": {"grad_cp": True}, "reference_op": {"op": "reference"},
          "int8": {"quant": "int8"}}[variant]
    case, (T, C) = CASES[0], SPLITS[1]
    batch = _batch(T, torch.float32)
    whole = _loss_and_grads(*_model(case, **kw), _one_pass(*batch))
    chunked = _loss_and_grads(*_model(case, **kw), _chunked(*batch, C, "full"))
    _assert_same(chunked, whole, TOL[torch.float32])


# the GPU ops take an initial state and return its gradient: the same check on each (fp32; the
# bounds are the ops' own fp32 error against the sequential reference, tests/kernels/test_gpu.py)
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("op,tol", [("cuda", 5e-3), ("fla", 1e-2)])
def test_full_bptt_equals_one_pass_on_gpu_ops(op, tol):
    from rwkvft.kernels import op_available
    ok, why = op_available(op, "x070")
    if not ok:
        pytest.skip(why)
    case, T, C = CASES[0], 80, 32            # chunks of 32, 32 and 16 tokens
    batch = [t.cuda() for t in _batch(T, torch.float32)]

    def on_gpu():
        model, names = _model(case, op=op)
        return model.cuda(), names

    whole = _loss_and_grads(*on_gpu(), _one_pass(*batch))
    chunked = _loss_and_grads(*on_gpu(), _chunked(*batch, C, "full"))
    _assert_same(chunked, whole, tol)


# ----------------------------------------------------------------------------- truncated BPTT
def _hand_truncated(inputs, targets, mask, C):
    """The definition, written out: one chunk after another, the state detached in between."""
    def run(model):
        total, state = 0.0, None
        for s in range(0, inputs.shape[1], C):
            if state is not None:
                state = [tuple(t.detach() for t in layer) for layer in state]
            h, state = model.forward_features(inputs[:, s:s + C], state)
            part, _ = masked_lm_loss(model.head, h, targets[:, s:s + C], mask[:, s:s + C], chunk=16)
            total = total + part
        return total, mask.sum()
    return run


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[5], CASES[7]], ids=_case_id)
def test_truncated_bptt_equals_a_loop_with_detached_states(case):
    T, C = 37, 16
    batch = _batch(T, torch.float32)
    ours = _loss_and_grads(*_model(case), _chunked(*batch, C, "truncated"))
    hand = _loss_and_grads(*_model(case), _hand_truncated(*batch, C))
    _assert_same(ours, hand, 1e-5)
    # and it is a different gradient from full BPTT (the detach is real)
    full = _loss_and_grads(*_model(case), _chunked(*batch, C, "full"))
    assert abs(float(ours[0] - full[0])) <= 1e-6 * abs(float(full[0]))   # same forward
    assert max(rel_err(ours[1][n], full[1][n]) for n in full[1]) > 1e-2


# ----------------------------------------------------------------------------- chunk cuts
def test_chunks_are_cut_in_order_and_the_last_is_the_remainder():
    model, _ = _model(CASES[0])
    seen, states = [], []
    inner = model.forward_features

    def spy(idx, state=None):
        seen.append(idx.clone())
        states.append(state)
        return inner(idx, state)

    model.forward_features = spy
    inputs, targets, mask = _batch(37, torch.float32)
    with torch.no_grad():
        infctx_loss(model, inputs, targets, mask, 16)
    assert [s.shape[1] for s in seen] == [16, 16, 5]
    assert torch.equal(torch.cat(seen, dim=1), inputs)
    # the first chunk starts from the model's own initial state (state tuning's hook)
    assert states[0] is None and all(s is not None for s in states[1:])


def test_carried_states_hold_no_chunk_activations():
    """The token shifts are x[:, -1] views of (B, T, C) activations; carried as views they would
    keep every chunk's activations alive and memory would grow with the sample again."""
    from rwkvft.training.infctx import _chunk
    model, _ = _model(CASES[0])
    inputs, targets, mask = _batch(32, torch.float32)
    _, state = _chunk(model, 16, inputs, targets, mask, None)
    assert len(state) == 2
    for layer in state:
        for t in layer:
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


def test_freed_host_memory_is_released_before_each_chunk_and_its_recompute(monkeypatch):
    """glibc keeps what each chunk frees (peak RSS grew with the sample): a trim runs before
    every chunk's forward and again before its recompute in the backward."""
    from rwkvft.training import infctx
    calls = []
    monkeypatch.setattr(infctx, "_malloc_trim", lambda: lambda pad: calls.append(pad))
    model, _ = _model(CASES[0])
    total, count = infctx_loss(model, *_batch(37, torch.float32), 16)   # chunks 16, 16, 5
    assert calls == [0] * 3
    (total / count).backward()
    assert calls == [0] * 6


def test_short_sample_is_one_pass():
    model, _ = _model(CASES[0])
    inputs, targets, mask = _batch(16, torch.float32)
    with torch.no_grad():
        a = lm_loss(model, inputs, targets, mask, 16, chunk_ctx=32)
        b = lm_loss(model, inputs, targets, mask, 16)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ----------------------------------------------------------------------------- end to end
def _flags(model, proj, data, **over):
    flags = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "numpy",
             "ctx_len": 256, "micro_bsz": 1, "epoch_steps": 2, "epoch_count": 3, "lr_init": 1e-2,
             "lr_final": 1e-3, "warmup_steps": 1, "accelerator": "cpu", "precision": "fp32",
             "peft": "miss", "peft_config": '{"r":16}', "progress": 0,
             "train_type": "infctx", "chunk_ctx": 32}
    flags.update(over)
    return [x for k, v in flags.items() for x in (f"--{k}", str(v))]


def _losses(proj: Path) -> list[float]:
    return [json.loads(l)["loss"] for l in (proj / "loss.jsonl").read_text().splitlines()]


def test_train_infctx_trains_saves_and_resumes_exactly(small_model, tokens_npy, tmp_path):
    full, part, plain = tmp_path / "full", tmp_path / "part", tmp_path / "plain"
    assert main(["train", *_flags(small_model, full, tokens_npy)]) == 0
    assert main(["train", *_flags(small_model, part, tokens_npy, my_exit=2)]) == 0
    assert (part / "rwkv-1.pth").exists() and not (part / "rwkv-2.pth").exists()
    assert main(["train", *_flags(small_model, part, tokens_npy), "--resume"]) == 0
    a = torch.load(full / "rwkv-2.pth", weights_only=True)
    b = torch.load(part / "rwkv-2.pth", weights_only=True)
    assert set(a) == set(b) and a
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k
    assert _losses(full) == pytest.approx(_losses(part), rel=1e-5)
    # full BPTT has the one-pass gradient: the same run without chunks takes the same steps
    assert main(["train", *_flags(small_model, plain, tokens_npy, train_type="none")]) == 0
    assert _losses(full) == pytest.approx(_losses(plain), rel=1e-4)
    assert _losses(full)[-1] < _losses(full)[0]
    config = json.loads((full / "train_config.json").read_text())
    assert (config["train_type"], config["chunk_ctx"], config["infctx_bptt"]) == ("infctx", 32, "full")


def test_ddp_infctx_equals_ddp_one_pass(small_model, tokens_npy, tmp_path):
    """Two CPU processes (gloo): each rank chunks its own samples, DDP averages the gradients;
    full BPTT keeps them the one-pass gradients, so both runs save the same adapter."""
    def run(proj, train_type):
        argv = _flags(small_model, proj, tokens_npy, devices=2, strategy="ddp", epoch_count=1,
                      ctx_len=64, chunk_ctx=16, train_type=train_type)
        r = subprocess.run([sys.executable, "-m", "rwkvft", "train", *argv],
                           cwd=Path(__file__).resolve().parents[2], capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return torch.load(proj / "rwkv-0.pth", weights_only=True)
    chunked, whole = run(tmp_path / "infctx", "infctx"), run(tmp_path / "plain", "none")
    assert set(chunked) == set(whole) and chunked
    for k in whole:
        assert torch.allclose(chunked[k], whole[k], atol=1e-6, rtol=1e-4), k
    assert _losses(tmp_path / "infctx") == pytest.approx(_losses(tmp_path / "plain"), rel=1e-4)
    log = (tmp_path / "infctx" / "train_log.txt").read_text()
    sums = json.loads([l for l in log.splitlines() if "checksum per rank" in l][0].split(": ", 1)[1])
    assert len(sums) == 2 and sums[0] == sums[1]


@pytest.mark.parametrize("over,msg", [
    ({"chunk_ctx": 40}, "multiple of 16"),
    ({"chunk_ctx": 256}, "below ctx_len"),
    ({"chunk_ctx": 0}, "--chunk_ctx must be"),
    ({"train_type": "state"}, "--peft state"),
    ({"train_type": "fullstate"}, "--peft state"),
    ({"train_type": "chunks"}, "not one of none, infctx"),
    ({"infctx_bptt": "partial"}, "not one of full, truncated"),
])
def test_bad_infctx_flags_are_one_line_errors(capsys, small_model, tokens_npy, tmp_path, over, msg):
    proj = tmp_path / "run"
    assert main(["train", *_flags(small_model, proj, tokens_npy, **over)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rwkvft: error: ") and msg in err[0], err
    assert not proj.exists()   # refused before anything was written


def test_bench_runs_infctx(capsys):
    assert main(["bench", "--size", "tiny", "--vocab_size", "256", "--ctx_len", "64",
                 "--train_type", "infctx", "--chunk_ctx", "32", "--steps", "1", "--warmup", "0",
                 "--accelerator", "cpu", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (r["train_type"], r["chunk_ctx"], r["infctx_bptt"]) == ("infctx", 32, "full")
    # each chunk's forward is recomputed: counted like grad_cp's recompute
    assert r["flops_per_token"] == 4 * r["matmul_params"] + 2 * r["trainable_matmul_params"] \
        + 2 * r["block_matmul_params"]
