"""`--compile` (models/compile.py): compiled blocks compute what the eager ones do.

Logits and every trainable gradient of a compiled model equal the eager model's within 1e-5
(max |diff| / max |eager|, fp32) for RWKV-7 and RWKV-6 with every method, under grad_cp, infctx
and a quantized base. The method matrix compiles with the `aot_eager` backend: dynamo's graphs,
the WKV graph break and autograd's partitioned backward exactly as under inductor, without
inductor's C++ code generation (minutes on 2 cores, cold); two cases run the real inductor
(test_inductor_equals_eager: RWKV-7 and RWKV-6 with MiSS).
"""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import rel_err
from rwkvft.adapters import inject, parse_peft
from rwkvft.models.build import model_from_state_dict
from rwkvft.models.compile import cannot_compile, compile_blocks, is_compiled
from rwkvft.models.init import init_state_dict, new_config, random_state_dict
from rwkvft.training.infctx import batch_loss

pytestmark = pytest.mark.compile

TOL = 1e-5
VOCAB = 64
METHODS = [("miss", {"r": 8}), ("lora", {"r": 4, "lora_alpha": 8}), ("pissa", {"r": 4}),
           ("state", {}), ("none", {})]
# RWKV-7 with every method; RWKV-6's block with a wrapped Linear (MiSS), its initial state and
# every tensor trainable (the adapters' code is the same in both versions: a test of each
# pair would double the suite's compile time and find nothing new)
CASES = [("x070", m, c) for m, c in METHODS] + [("x060", m, c) for m, c in METHODS
                                                 if m in ("miss", "state", "none")]


def _model(version: str, peft: str, conf: dict, n_layer: int = 2, seed: int = 0,
           init: str = "random"):
    """A tiny model with the method injected and every trainable tensor random (a zero LoRA B
    or a zero initial state would leave other gradients zero, and so untested). `init`:
    "random" (random_state_dict) or "init" (what `rwkvft init` writes; RWKV-7 only)."""
    cfg = new_config(n_layer, 64, VOCAB, 32, version=version)
    sd = init_state_dict(cfg, seed, trainable=True) if init == "init" else random_state_dict(cfg, seed)
    model = model_from_state_dict(sd).train()
    inject(model, parse_peft(peft, conf), [])
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and peft != "none":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _step(model, idx, chunk_ctx: int = 0):
    """Logits of a plain forward, then the gradients of the trainer's loss (batch_loss)."""
    logits = model(idx).detach()
    targets, mask = torch.roll(idx, -1, 1), torch.ones(idx.shape, device=idx.device)
    loss = batch_loss(model, idx, targets, mask, chunk=16, chunk_ctx=chunk_ctx)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return logits, loss.detach(), grads


def _compare(eager, compiled, idx, chunk_ctx: int = 0):
    le, loss_e, ge = _step(eager, idx, chunk_ctx)
    lc, loss_c, gc = _step(compiled, idx, chunk_ctx)
    assert rel_err(lc, le) <= TOL
    assert float(abs(loss_c - loss_e)) <= TOL * float(abs(loss_e))
    assert set(gc) == set(ge) and ge
    for n in ge:
        assert ge[n].abs().max() > 0, n   # a zero gradient would compare equal and prove nothing
        assert rel_err(gc[n], ge[n]) <= TOL, (n, rel_err(gc[n], ge[n]))


def _pair(version, peft, conf, backend="aot_eager", **kw):
    eager = _model(version, peft, conf, **kw)
    compiled = copy.deepcopy(eager)
    note = compile_blocks(compiled, "cpu", backend=backend)
    assert is_compiled(compiled) and not is_compiled(eager)
    assert "WKV op" in note
    return eager, compiled


@pytest.mark.parametrize("version, peft, conf", CASES, ids=[f"{v}-{m}" for v, m, _ in CASES])
def test_compiled_equals_eager(version, peft, conf):
    eager, compiled = _pair(version, peft, conf)
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(3))
    _compare(eager, compiled, idx)


@pytest.mark.parametrize("grad_cp, chunk_ctx", [(1, 0), (0, 16)], ids=["grad_cp", "infctx"])
def test_compiled_under_grad_cp_and_infctx(grad_cp, chunk_ctx):
    eager, compiled = _pair("x070", "miss", {"r": 8})
    for m in (eager, compiled):
        m.set_runtime(grad_cp=bool(grad_cp))
    idx = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(4))
    _compare(eager, compiled, idx, chunk_ctx)


def test_compiled_with_a_quantized_base():
    pytest.importorskip("bitsandbytes")
    from rwkvft.adapters.quant import quantize_base
    eager = _model("x070", "miss", {"r": 8})
    quantize_base(eager, "nf4", None)
    compiled = copy.deepcopy(eager)
    compile_blocks(compiled, "cpu", backend="aot_eager")
    idx = torch.randint(0, VOCAB, (1, 24), generator=torch.Generator().manual_seed(5))
    _compare(eager, compiled, idx)


def _rounding_sensitivity(model, idx) -> float:
    """How far eager fp32's own gradients move when every frozen weight is changed in its last
    bit (x (1 + 6e-8 n), n ~ N(0,1)): the largest max|diff|/max|eager| over the trainable
    tensors. Any other evaluation order of the same fp32 sums (inductor's fused, vectorised
    reductions) moves them about this far too, so 1e-5 is a meaningful bound only where this
    is well under 1e-5. (random_state_dict seed 0, RWKV-7: 3e-5, from a layer-1 head whose
    first-token WKV output y_0 = v_0 (k_0 . r_0) has a variance, 6.5e-4, at ln_x's eps
    6.4e-4, where the group norm's gradient follows the cancelling dot product k_0 . r_0.)"""
    moved = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in moved.parameters():
            if not p.requires_grad:
                p.mul_(1 + 6e-8 * torch.randn(p.shape, generator=gen))
    _, _, g = _step(model, idx)
    _, _, gm = _step(moved, idx)
    return max(rel_err(gm[n], g[n]) for n in g)


# The real backend, inductor's generated C++ (gcc), on `rwkvft init`'s RWKV-7 (init_state_dict
# trainable=True) and a random RWKV-6 (init writes RWKV-7 only); ~70 s per version cold, 20-50 s
# with a warm cache (inductor's C++ is cached; the AOTAutograd trace is redone, models/compile.py).
# (RWKV-7 state tuning also passes, 4.6e-7; left out for the marker's time budget: its graphs
# differ from MiSS's only in the initial state, which the aot_eager matrix checks)
INDUCTOR_CASES = [("x070", "miss", {"r": 8}, "init"), ("x060", "miss", {"r": 8}, "random")]


@pytest.mark.parametrize("version, peft, conf, init", INDUCTOR_CASES,
                         ids=[f"{v}-{m}" for v, m, _, _ in INDUCTOR_CASES])
def test_inductor_equals_eager(version, peft, conf, init):
    """Logits, loss and every trainable gradient within 1e-5 of eager, at a point where fp32
    rounding alone moves the gradients by at most half of that."""
    if cannot_compile("cpu"):
        pytest.skip(cannot_compile("cpu"))
    eager, compiled = _pair(version, peft, conf, backend="inductor", init=init)
    idx = torch.randint(0, VOCAB, (1, 16), generator=torch.Generator().manual_seed(6))
    assert _rounding_sensitivity(eager, idx) <= TOL / 2, "an ill-conditioned test point: pick another"
    _compare(eager, compiled, idx)


def test_the_old_inductor_point_is_ill_conditioned():
    """Why the earlier inductor case (random_state_dict seed 0, RWKV-7 MiSS) missed 1e-5 by 4e-5:
    a last-bit change of the frozen weights moves eager's own gradients more than 1e-5 there, so
    the guard above rejects it; the point the case uses now moves them less than half of 1e-5.
    (3e-5 with the log-space chunked WKV op, 1.03e-5 with the factored one: rejected either way.)"""
    idx = torch.randint(0, VOCAB, (1, 16), generator=torch.Generator().manual_seed(6))
    assert _rounding_sensitivity(_model("x070", "miss", {"r": 8}), idx) > TOL / 2
    assert _rounding_sensitivity(_model("x070", "miss", {"r": 8}, init="init"), idx) < TOL / 2


def test_the_aot_autograd_cache_is_off(monkeypatch):
    """torch 2.13's AOTAutograd cache segfaults saving, or replays garbage view sizes loading, the
    compiled blocks' graphs (models/compile.py): test_inductor_equals_eager's second case in a
    warm process failed 3 runs in 3 with it on, 0 in 4 without."""
    from torch._functorch import config
    monkeypatch.setattr(config, "enable_autograd_cache", True)  # torch's default
    compile_blocks(_model("x070", "miss", {"r": 8}), "cpu", backend="aot_eager")
    assert config.enable_autograd_cache is False


def test_zero3_runs_eagerly_with_one_note():
    model = _model("x070", "miss", {"r": 8})
    note = compile_blocks(model, "cuda", strategy="deepspeed_stage_3")
    assert note.startswith("--compile is off for this run: ZeRO-3") and note.endswith("running eagerly")
    assert not is_compiled(model)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("grad_cp", [0, 1], ids=["plain", "grad_cp"])
def test_inductor_on_the_gpu(grad_cp):
    """inductor's Triton code with the GPU's WKV op (auto), and under grad_cp the recompute on
    autograd's device thread (RWKV-PEFT's CheckpointError, gpu_playbook §6.2) must not differ."""
    from rwkvft.kernels import resolve_op
    eager = _model("x070", "miss", {"r": 8}).cuda()
    op, _ = resolve_op("auto", True, "x070")
    eager.set_runtime(op=op, grad_cp=bool(grad_cp))
    compiled = copy.deepcopy(eager)
    compile_blocks(compiled, "cuda")
    idx = torch.randint(0, VOCAB, (2, 32), generator=torch.Generator().manual_seed(7)).cuda()
    _compare(eager, compiled, idx)
