"""Layer maths of MiSS / LoRA / PiSSA against HF peft (the oracle) and against their own merges."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rwkvft.adapters import LoraLinear, MissLinear, PissaLinear
from rwkvft.adapters.miss import bat_delta, merge_weight, miss_delta

peft = pytest.importorskip("peft")


class MLP(nn.Module):
    def __init__(self, n_in: int, n_hidden: int):
        super().__init__()
        self.lin0 = nn.Linear(n_in, n_hidden)
        self.lin1 = nn.Linear(n_hidden, 3)

    def forward(self, x):
        return self.lin1(torch.relu(self.lin0(x)))


def _hf_layer(base: nn.Linear, config):
    """HF's adapted copy of `base` (its own deep copy, so our layer keeps the original)."""
    mlp = MLP(base.in_features, base.out_features)
    mlp.lin0.load_state_dict(base.state_dict())
    return peft.get_peft_model(mlp, config).base_model.model


MISS_CASES = [  # (in, out, r, mode, mini_r)
    (12, 20, 4, "default", 0),
    (10, 20, 3, "default", 0),    # in % r != 0: zero-padded last shard
    (12, 8, 4, "bat", 0),
    (16, 16, 8, "bat", 0),
    (10, 20, 2, "mini", 5),
    (10, 20, 3, "mini", 4),       # mini with in % r != 0
]


def _random_adapter(layer: MissLinear, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(layer.miss.shape, generator=g) * 0.3
    with torch.no_grad():
        layer.miss.copy_(t)
    return t


@pytest.mark.parametrize("n_in,n_out,r,mode,mini_r", MISS_CASES)
def test_miss_matches_hf_forward_and_merge(n_in, n_out, r, mode, mini_r):
    torch.manual_seed(0)
    base = nn.Linear(n_in, n_out)
    init = {"default": True, "bat": "bat", "mini": "mini"}[mode]
    cfg = peft.MissConfig(r=r, target_modules=["lin0"], init_weights=init,
                          mini_r=max(mini_r, 1))
    hf = _hf_layer(base, cfg)
    ours = MissLinear(base, r, mode, mini_r)
    assert tuple(ours.miss.shape) == tuple(hf.lin0.miss_block["default"].shape)
    t = _random_adapter(ours, 1)
    with torch.no_grad():
        hf.lin0.miss_block["default"].copy_(t)
    x = torch.randn(2, 5, n_in)
    ref = hf.lin0(x)
    got = ours(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # merged weight: HF's merge_and_unload vs ours, and merged forward == adapted forward
    hf.lin0.merge()
    merged_hf = hf.lin0.base_layer.weight.detach()
    torch.testing.assert_close(ours.merged_weight(), merged_hf, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nn.functional.linear(x, ours.merged_weight(), base.bias), got,
                               atol=1e-4, rtol=1e-4)


def test_lora_matches_hf_forward_and_merge():
    torch.manual_seed(0)
    base = nn.Linear(12, 20)
    cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["lin0"], lora_dropout=0.0)
    hf = _hf_layer(base, cfg)
    ours = LoraLinear(base, 4, scale=16 / 4)
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 12, generator=g), torch.randn(20, 4, generator=g)
    with torch.no_grad():
        ours.lora_A.copy_(a)
        ours.lora_B.copy_(b)
        hf.lin0.lora_A["default"].weight.copy_(a)
        hf.lin0.lora_B["default"].weight.copy_(b)
    x = torch.randn(3, 12)
    torch.testing.assert_close(ours(x), hf.lin0(x), atol=1e-5, rtol=1e-5)
    hf.lin0.merge()
    torch.testing.assert_close(ours.merged_weight(), hf.lin0.base_layer.weight.detach(),
                               atol=1e-5, rtol=1e-5)


def test_lora_init_like_hf():
    """A: kaiming-uniform(a=sqrt 5) on (r, in) -> bound 1/sqrt(in); B: zeros."""
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(400, 30, bias=False), 16, scale=2.0)
    bound = 1 / 400 ** 0.5
    assert layer.lora_A.abs().max() <= bound
    assert layer.lora_A.abs().max() > 0.9 * bound           # uniform fills its range
    assert torch.count_nonzero(layer.lora_B) == 0


def test_miss_dense_delta_equals_shard_forward():
    """The closed form dW[o, c] = D[c mod r, o] (spec §2.3) for n % r != 0."""
    d = torch.randn(3, 5)
    dense = miss_delta(d, 7)
    for o in range(5):
        for c in range(7):
            assert dense[o, c] == d[c % 3, o]


def test_bat_block_formula_by_hand():
    """HF bat indexes B by output block i; RWKV-PEFT's bat_in by input block j."""
    r = 2
    w, t = torch.randn(4, 6), torch.randn(2, r, r)      # 2 row blocks, 3 column blocks
    t_in = torch.randn(3, r, r)
    d_out, d_in = bat_delta(w, t, "bat"), bat_delta(w, t_in, "bat_in")
    for i in range(2):
        for j in range(3):
            blk = w[i * r:(i + 1) * r, j * r:(j + 1) * r]
            torch.testing.assert_close(d_out[i * r:(i + 1) * r, j * r:(j + 1) * r], blk @ t[i] + t[i])
            torch.testing.assert_close(d_in[i * r:(i + 1) * r, j * r:(j + 1) * r],
                                       blk @ t_in[j] + t_in[j])


@pytest.mark.parametrize("mode,shape", [("default", (3, 8)), ("mini", (3, 4)),
                                        ("bat", (2, 4, 4)), ("bat_in", (3, 4, 4))])
def test_merge_unmerge_round_trip(mode, shape):
    w = torch.randn(8, 12)
    t = torch.randn(shape) * 0.1
    merged = merge_weight(w, t, mode, +1)
    assert (merged - w).abs().max() > 1e-3
    torch.testing.assert_close(merge_weight(merged, t, mode, -1), w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer_fn", [
    lambda b: MissLinear(b, 4, "default", dropout=0.1),
    lambda b: MissLinear(b, 4, "bat"),
    lambda b: MissLinear(b, 4, "bat_in"),
    lambda b: MissLinear(b, 4, "mini", mini_r=4),
    lambda b: LoraLinear(b, 4, scale=2.0, dropout=0.1),
    lambda b: PissaLinear(b, 4),
], ids=["default", "bat", "bat_in", "mini", "lora", "pissa"])
def test_identity_at_init_then_training_changes_output(layer_fn):
    torch.manual_seed(0)
    base = nn.Linear(16, 8, bias=False)
    w0 = base.weight.detach().clone()
    layer = layer_fn(base)
    x = torch.randn(4, 16)
    ref = base(x)
    layer.eval()
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(base.weight, w0)          # wrapping never writes into the caller's W
    frozen = layer.weight.detach().clone()
    layer.train()
    params = [p for n, p in layer.named_parameters() if n not in ("weight", "bias")]
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        ((layer(x) - 1.0) ** 2).mean().backward()
        opt.step()
    layer.eval()
    assert (layer(x) - ref).abs().max() > 1e-4
    assert torch.equal(layer.weight, frozen)     # the frozen base is bit-identical
    assert layer.weight.grad is None
    # merged forward == adapted forward
    torch.testing.assert_close(x @ layer.merged_weight().t(), layer(x), atol=1e-4, rtol=1e-4)


def test_adapter_math_in_fp32_with_bf16_base():
    torch.manual_seed(0)
    base = nn.Linear(32, 16, bias=False).to(torch.bfloat16)
    layer = MissLinear(base, 8)
    assert layer.miss.dtype == torch.float32 and layer.weight.dtype == torch.bfloat16
    with torch.no_grad():
        layer.miss.normal_()
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    ref = base(x).float() + x.float() @ miss_delta(layer.miss.detach(), 32).t()
    torch.testing.assert_close(y.float(), ref, atol=0.05, rtol=0.02)


def test_pissa_factors_are_top_singular_directions():
    torch.manual_seed(0)
    base = nn.Linear(24, 16, bias=False)
    layer = PissaLinear(base, 4)
    w = base.weight.detach()
    s = torch.linalg.svdvals(w)
    ba = layer.lora_B0 @ layer.lora_A0
    torch.testing.assert_close(torch.linalg.svdvals(ba)[:4], s[:4], atol=1e-5, rtol=1e-5)
    # residual keeps exactly the remaining spectrum
    torch.testing.assert_close(torch.linalg.svdvals(layer.weight.detach())[:12], s[4:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.original_weight(), w, atol=1e-5, rtol=1e-5)
    # randomized SVD (svd_niter) finds the same subspace on a matrix with a clear spectral gap
    lowrank = PissaLinear(base, 4, svd_niter=6)
    torch.testing.assert_close(lowrank.lora_B0 @ lowrank.lora_A0, ba, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("mode", ["default", "bat"])
def test_adapter_term_stays_fp32_under_autocast(mode):
    """bf16-mixed autocast may round the base matmul, never the adapter term."""
    torch.manual_seed(0)
    layer = MissLinear(nn.Linear(64, 64, bias=False), 8, mode)
    with torch.no_grad():
        layer.miss.normal_(0, 0.1)
    x = torch.randn(4, 64)
    exact_delta = layer(x) - torch.nn.functional.linear(x, layer.weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
        base = torch.nn.functional.linear(x, layer.weight)
    assert got.dtype == torch.float32 and base.dtype == torch.bfloat16
    if mode == "bat":      # W' is materialised: the whole layer runs in fp32
        torch.testing.assert_close(got, layer(x), atol=1e-5, rtol=1e-5)
    else:                  # bf16 rounding of the adapter term would be ~1e-2 here
        torch.testing.assert_close(got - base.float(), exact_delta, atol=2e-5, rtol=1e-5)
