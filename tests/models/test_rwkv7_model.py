"""RWKV-7 model: logits against the `rwkv` pip package, state continuation, module contracts."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import available_ops, pieces_vs_whole, rel_err

import rwkvft
from rwkvft.formats import load_model, read_state_dict
from rwkvft.errors import UserError
from rwkvft.models.init import init_state_dict, new_config, perturb_state_dict

TOL = 1e-4  # max|diff| / max|logit|



def tokens(n: int, vocab: int, seed: int) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def compare_with_pip(model, oracle, toks: list[int]) -> tuple[float, float]:
    """(whole-sequence error, token-by-token error) of our model against the pip package."""
    ref_seq, _ = oracle.forward(toks, None, full_output=True)
    with torch.no_grad():
        ours_seq = model(torch.tensor([toks]))[0]
        # one-token steps use the sequential op (chunked ops pad every step to a whole chunk;
        # chunked stateful continuation is covered by test_sequence_in_pieces_equals_whole)
        model.set_runtime(op="reference")
        state, pip_state, step_err = None, None, 0.0
        for t in toks:
            ours, state = model(torch.tensor([[t]]), state, return_state=True)
            ref, pip_state = oracle.forward([t], pip_state)
            step_err = max(step_err, rel_err(ours[0, -1], ref))
    return rel_err(ours_seq, ref_seq), step_err


VARIANTS = {"official": (True, False), "no-layer0-v": (False, False), "flat-vectors": (True, True)}
# every op on the official layout; the file variants with the model's default op
CASES = [(op, "official") for op in available_ops()] + [
    (available_ops()[-1], name) for name in ("no-layer0-v", "flat-vectors")]


@pytest.mark.parametrize("op,variant", CASES, ids=[f"{op}-{v}" for op, v in CASES])
def test_logits_match_pip_small(make_checkpoint, pip_rwkv, op, variant):
    layer0_v, flat = VARIANTS[variant]
    path = make_checkpoint(n_layer=3, n_embd=128, vocab_size=512, seed=1, layer0_v=layer0_v, flat=flat)
    model = load_model(path)
    model.set_runtime(op=op)
    seq_err, step_err = compare_with_pip(model, pip_rwkv(path), tokens(12, 512, seed=2))
    assert seq_err <= TOL and step_err <= TOL, (seq_err, step_err)


def test_logits_match_pip_0_1b_shape(make_checkpoint, pip_rwkv):
    """The released 0.1B shape (L12 C768 V65536, Dw 64 Da 64 Dv 32 Dg 128), bf16 file."""
    path = make_checkpoint(n_layer=12, n_embd=768, vocab_size=65536, seed=3, dtype=torch.bfloat16)
    model = load_model(path)
    model.set_runtime(op=available_ops()[-1])
    assert model.blocks[1].att.v1.shape == (768, 32) and model.blocks[0].att.g1.shape == (768, 128)
    seq_err, step_err = compare_with_pip(model, pip_rwkv(path), tokens(8, 65536, seed=4))
    assert seq_err <= TOL and step_err <= TOL, (seq_err, step_err)


@pytest.mark.parametrize("op", available_ops())
def test_sequence_in_pieces_equals_whole(make_checkpoint, op):
    model = load_model(make_checkpoint(n_layer=3, seed=1))
    model.set_runtime(op=op)
    idx = torch.randint(0, 512, (2, 37), generator=torch.Generator().manual_seed(5))
    assert pieces_vs_whole(model, idx) <= 1e-5


def test_zero_state_equals_no_state(make_checkpoint):
    model = load_model(make_checkpoint())
    model.set_runtime(op="reference")
    idx = torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(model(idx), model(idx, model.init_state(2)))


def test_state_layout(make_checkpoint):
    model = load_model(make_checkpoint())
    model.set_runtime(op="reference")
    with torch.no_grad():
        _, state = model(torch.tensor([[1, 2, 3]]), return_state=True)
    assert len(state) == 2
    att_shift, wkv, ffn_shift = state[0]
    assert att_shift.shape == ffn_shift.shape == (1, 128)
    assert wkv.shape == (1, 2, 64, 64) and wkv.dtype == torch.float32


def test_state_dict_keys_are_the_file_keys(make_checkpoint):
    for layer0_v in (True, False):
        path = make_checkpoint(layer0_v=layer0_v)
        sd = read_state_dict(path)
        model_sd = load_model(path).state_dict()
        assert list(model_sd) == list(sd)
        assert all(model_sd[k].shape == sd[k].shape for k in sd)


def test_flat_vector_file_gives_official_shapes(make_checkpoint):
    official = load_model(make_checkpoint(seed=1))
    flat = load_model(make_checkpoint(seed=1, flat=True))
    for k, t in official.state_dict().items():
        assert torch.equal(flat.state_dict()[k], t), k
    assert official.blocks[0].att.x_r.shape == (1, 1, 128)
    assert official.blocks[0].att.r_k.shape == (2, 64)


def test_flat_r_k_loads_as_heads(make_checkpoint, tmp_path):
    sd = read_state_dict(make_checkpoint(seed=1))
    sd = {k: (t.reshape(-1) if k.endswith("r_k") else t) for k, t in sd.items()}
    torch.save(sd, tmp_path / "flat_rk.pth")
    model = load_model(tmp_path / "flat_rk.pth")
    ref = load_model(make_checkpoint(seed=1))
    assert torch.equal(model.blocks[1].att.r_k, ref.blocks[1].att.r_k)


def test_top_level_load_model_and_dtype(make_checkpoint):
    model = rwkvft.load_model(make_checkpoint(), dtype=torch.bfloat16)
    model.set_runtime(op="reference")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    with torch.no_grad():
        logits, state = model(torch.tensor([[5, 6, 7]]), return_state=True)
    assert logits.dtype == torch.bfloat16
    assert state[0][1].dtype == torch.float32  # WKV state stays fp32 in a bf16 model
    ref = rwkvft.load_model(make_checkpoint())
    ref.set_runtime(op="reference")
    with torch.no_grad():
        assert rel_err(logits, ref(torch.tensor([[5, 6, 7]]))) < 0.05


class Recorder(torch.nn.Module):
    """Stands in for a projection without exposing `.weight` (as adapters / quantized layers do)."""

    def __init__(self, inner: torch.nn.Linear, calls: list):
        super().__init__()
        self.inner, self.calls = inner, calls

    def forward(self, x):
        self.calls.append(1)
        return self.inner(x)


def test_projections_are_only_called(make_checkpoint):
    model = load_model(make_checkpoint())
    model.set_runtime(op="reference")
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        before = model(idx)
    calls: list = []
    for block in model.blocks:
        for parent, names in ((block.att, ("receptance", "key", "value", "output")),
                              (block.ffn, ("key", "value"))):
            for name in names:
                setattr(parent, name, Recorder(getattr(parent, name), calls))
    with torch.no_grad():
        assert torch.equal(model(idx), before)
    assert len(calls) == 6 * len(model.blocks)


def test_grad_checkpointing_gives_same_gradients(make_checkpoint):
    idx = torch.randint(0, 512, (2, 8), generator=torch.Generator().manual_seed(7))
    grads = []
    for grad_cp in (False, True):
        model = load_model(make_checkpoint()).train()
        model.set_runtime(op="reference", grad_cp=grad_cp)
        loss = torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    unused = {n for n, g in grads[0].items() if g is None}
    assert unused == {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}  # never used (§1.2)
    for name, g in grads[0].items():
        if name not in unused:
            assert torch.allclose(grads[1][name], g, rtol=1e-4, atol=1e-6), name


def test_fresh_init_blocks_output_zero():
    """Official init zeroes att.output and ffn.value, so the blocks add nothing (spec §3)."""
    cfg = new_config(2, 128, vocab_size=300)
    sd = init_state_dict(cfg, seed=0)
    from rwkvft.models import build_model
    model = build_model(cfg)
    model.load_state_dict(sd)
    model.set_runtime(op="reference")
    idx = torch.tensor([[7, 8, 9, 299]])
    with torch.no_grad():
        h, _ = model.forward_features(idx)
        ln = torch.nn.functional.layer_norm
        emb = sd["emb.weight"].float()[idx]
        x = ln(emb, (128,), sd["blocks.0.ln0.weight"].float(), sd["blocks.0.ln0.bias"].float())
        expected = ln(x, (128,), sd["ln_out.weight"].float(), sd["ln_out.bias"].float())
    assert torch.allclose(h, expected, atol=1e-5)


def test_init_follows_the_official_recipe():
    cfg = new_config(3, 128, vocab_size=256)
    sd = init_state_dict(cfg, seed=0)
    assert all(t.dtype == torch.bfloat16 for t in sd.values())
    assert len(sd) == 33 * 3 + 6 and "blocks.0.att.v0" in sd
    W = sd["blocks.1.att.receptance.weight"].float()
    assert torch.allclose(W @ W.T, torch.eye(128), atol=0.05)  # orthogonal, gain 1
    assert sd["blocks.2.att.output.weight"].abs().max() == 0
    assert sd["blocks.2.ffn.value.weight"].abs().max() == 0
    assert torch.all(sd["blocks.0.att.r_k"].float() == torch.tensor(-0.04).bfloat16().float())
    # ln_x weight ((l+1)/L)^0.7, decay bias spans slow and fast channels
    assert float(sd["blocks.0.att.ln_x.weight"][0]) == pytest.approx(
        (1 / 3) ** 0.7, rel=1e-2)
    w0 = sd["blocks.1.att.w0"].float().flatten()
    decay = torch.exp(-math.exp(-0.5) * torch.sigmoid(w0))
    assert decay.min() < 0.75 and decay.max() > 0.99


def test_init_is_deterministic_per_seed():
    cfg = new_config(2, 128, vocab_size=256)
    a, b, c = init_state_dict(cfg, 1), init_state_dict(cfg, 1), init_state_dict(cfg, 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.att.receptance.weight"], c["blocks.0.att.receptance.weight"])


def test_perturb_keeps_layout_and_mixes():
    sd = init_state_dict(new_config(2, 128, vocab_size=256), seed=0)
    p = perturb_state_dict(sd, seed=1, scale=1.0)
    assert list(p) == list(sd)
    assert all(p[k].dtype == sd[k].dtype and p[k].shape == sd[k].shape for k in sd)
    assert p["blocks.1.att.output.weight"].abs().max() > 0
    assert all(0 <= float(p[k].min()) and float(p[k].max()) <= 1 for k in p if ".x_" in k)
    assert torch.equal(perturb_state_dict(sd, 1)["head.weight"], p["head.weight"])


@pytest.mark.parametrize("n_embd,dims", [
    (768, (64, 64, 32, 128)), (1024, (64, 64, 32, 128)), (2048, (96, 96, 64, 256)),
    (2560, (96, 96, 64, 320)), (4096, (128, 128, 96, 480))])
def test_new_config_matches_released_lora_dims(n_embd, dims):
    """Table in spec §2.2 (released 0.1B..7.2B models)."""
    cfg = new_config(2, n_embd)
    assert (cfg.d_decay, cfg.d_aaa, cfg.d_mv, cfg.d_gate) == dims
    assert cfg.dim_ffn == 4 * n_embd and cfg.n_head == n_embd // 64


@pytest.mark.parametrize("args,match", [
    ((1, 128), "n_layer must be at least 2"),
    ((2, 100), "n_embd 100 must be a positive multiple of head_size 64"),
    ((2, 128, 0), "vocab_size must be positive")])
def test_new_config_rejects_bad_sizes(args, match):
    with pytest.raises(UserError, match=match):
        new_config(*args)


def test_bad_model_input_messages(make_checkpoint):
    model = load_model(make_checkpoint())
    model.set_runtime(op="reference")
    with pytest.raises(UserError, match=r"\(batch, time\) LongTensor .* got \(5,\); use idx.view"):
        model(torch.arange(5))
    with pytest.raises(UserError, match="state has 1 layers but the model has 2"):
        model(torch.tensor([[1]]), model.init_state(1)[:1])
    with pytest.raises(UserError, match=r"state is for batch size 2 but the input has 1 .*init_state\(1\)"):
        model(torch.tensor([[1]]), model.init_state(2))
