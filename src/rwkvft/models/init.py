"""Fresh RWKV-7 weights: the official initialisation (as the architecture spec gives it) and random
perturbations for tests and benchmarks; random RWKV-6 / RWKV-5.2 test models.

The official init makes every block output exactly zero (att.output and ffn.value start at 0),
so equivalence tests perturb it first (`perturb_state_dict`). It also means that nothing before
att.output gets a gradient: state tuning (the initial WKV state feeds att.output only) learns
nothing on such a model. `rwkvft init` therefore writes `init_state_dict(cfg, seed,
trainable=True)`: the official init with att.output and ffn.value given small orthogonal weights
(gain START_GAIN) instead of zeros, so that every method trains from the first step;
`rwkvft init --official` keeps the zeros.
"""
from __future__ import annotations

import math

import torch

from ..errors import UserError
from .schema import ModelConfig, official_shapes, x070_shapes


# Orthogonal gain of att.output and ffn.value in a trainable new model: small, so a block
# still starts near the identity, yet enough for state tuning to lower the demo's loss.
START_GAIN = 0.1


def _lora_dim(f: float) -> int:
    # official formula: multiples of 32, at least 32, Python (banker's) rounding
    return max(32, int(round(f / 32) * 32))


def new_config(n_layer: int, n_embd: int, vocab_size: int = 65536, head_size: int = 64,
               version: str = "x070") -> ModelConfig:
    """Config with the dims the released models were built with: RWKV-7 LoRA dims,
    or for x060 / x052 FFN int(3.5C)//32*32 and x060's Dm 32 / Dd 64, doubled at C 4096."""
    if n_layer < 2:
        raise UserError(f"n_layer must be at least 2 (got {n_layer}): the official init and "
                        f"web-rwkv need two layers or more")
    if head_size < 1 or n_embd < head_size or n_embd % head_size:
        raise UserError(f"n_embd {n_embd} must be a positive multiple of head_size {head_size}; "
                        f"e.g. --n_embd {max(head_size, 1) * 2}")
    if vocab_size < 1:
        raise UserError(f"vocab_size must be positive (got {vocab_size}); the World vocab is 65536")
    C = n_embd
    if version in ("x060", "x052"):
        wide = 2 if C >= 4096 else 1
        return ModelConfig(version=version, n_layer=n_layer, n_embd=C, vocab_size=vocab_size,
                           head_size=head_size, dim_ffn=int(3.5 * C) // 32 * 32,
                           d_decay=64 * wide if version == "x060" else 0,
                           d_mix=32 * wide if version == "x060" else 0, layer0_v=False)
    if version != "x070":
        raise UserError(f"unknown model version {version!r}; use x070, x060 or x052")
    d_gate = 128 if C == 1024 else _lora_dim(0.6 * C ** 0.8)  # released 0.4B used 128, not 160
    return ModelConfig(version="x070", n_layer=n_layer, n_embd=C, vocab_size=vocab_size,
                       head_size=head_size, dim_ffn=4 * C,
                       d_decay=_lora_dim(1.8 * math.sqrt(C)), d_aaa=_lora_dim(1.8 * math.sqrt(C)),
                       d_mv=_lora_dim(1.3 * math.sqrt(C)), d_gate=d_gate, layer0_v=True)


def _orthogonal(rows: int, cols: int, gain: float, gen: torch.Generator | None) -> torch.Tensor:
    t = torch.empty(rows, cols)
    if gain == 0 or gen is None:  # gen None: zeros, for random_state_dict (QR is slow at 0.1B)
        return t.zero_()
    if rows > cols:  # tall matrices keep unit-variance outputs (official ortho_init rule)
        gain *= math.sqrt(rows / cols)
    return torch.nn.init.orthogonal_(t, gain=gain, generator=gen)


def _layer_vectors(cfg: ModelConfig, l: int) -> dict[str, torch.Tensor]:
    C, N, L = cfg.n_embd, cfg.head_size, cfg.n_layer
    r0, r1 = l / (L - 1), 1.0 - l / L
    n = torch.arange(C, dtype=torch.float64)
    ddd, lin = n / C, n / (C - 1) - 0.5
    z = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
    zig = z * z.abs()
    vec = {
        "x_r": 1 - ddd ** (0.2 * r1), "x_w": 1 - ddd ** (0.9 * r1), "x_k": 1 - ddd ** (0.7 * r1),
        "x_v": 1 - ddd ** (0.7 * r1), "x_a": 1 - ddd ** (0.9 * r1), "x_g": 1 - ddd ** (0.2 * r1),
        "w0": -6 + 6 * (n / (C - 1)) ** (1 + r0 ** 0.3) + 0.5 + 2.5 * zig,
        "a0": -0.19 + 0.3 * zig + 0.4 * lin, "v0": 0.73 - 0.4 * lin,
        "k_k": 0.71 - 0.1 * lin, "k_a": torch.full_like(n, 1.02),
    }
    out = {f"att.{k}": v.view(1, 1, C) for k, v in vec.items()}
    out["ffn.x_k"] = (1 - ddd ** (r1 ** 4)).view(1, 1, C)
    return out


def _layer_tensors(cfg: ModelConfig, l: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    C, F, H, N = cfg.n_embd, cfg.dim_ffn, cfg.n_head, cfg.head_size
    t = _layer_vectors(cfg, l)
    if l == 0:
        t.update({"ln0.weight": torch.ones(C), "ln0.bias": torch.zeros(C)})
    for ln in ("ln1", "ln2"):
        t.update({f"{ln}.weight": torch.ones(C), f"{ln}.bias": torch.zeros(C)})
    for name, dim in (("w", cfg.d_decay), ("a", cfg.d_aaa), ("v", cfg.d_mv), ("g", cfg.d_gate)):
        t[f"att.{name}1"] = torch.zeros(C, dim)
        t[f"att.{name}2"] = _orthogonal(dim, C, 0.1, gen)
    t["att.r_k"] = torch.full((H, N), -0.04)
    for name, gain in (("receptance", 1.0), ("key", 0.1), ("value", 1.0), ("output", 0.0)):
        t[f"att.{name}.weight"] = _orthogonal(C, C, gain, gen)
    t["att.ln_x.weight"] = torch.full((C,), ((l + 1) / cfg.n_layer) ** 0.7)
    t["att.ln_x.bias"] = torch.zeros(C)
    t["ffn.key.weight"] = _orthogonal(F, C, 1.0, gen)
    t["ffn.value.weight"] = _orthogonal(C, F, 0.0, gen)
    if l == 0 and not cfg.layer0_v:
        for name in ("v0", "v1", "v2"):
            del t[f"att.{name}"]
    return t


def init_state_dict(cfg: ModelConfig, seed: int = 0, trainable: bool = False) -> dict[str, torch.Tensor]:
    """Official RWKV-7 initialisation as a bf16 state dict in the official key order; with
    `trainable`, att.output and ffn.value get orthogonal weights of gain START_GAIN instead of
    zeros (module docstring: what every method needs to train from the first step)."""
    sd = _build_state_dict(cfg, torch.Generator().manual_seed(seed))
    if trainable:  # a generator of its own: every other tensor stays the official one
        gen = torch.Generator().manual_seed(seed + 1)
        for l in range(cfg.n_layer):
            for name in ("att.output.weight", "ffn.value.weight"):
                key = f"blocks.{l}.{name}"
                sd[key] = _orthogonal(*sd[key].shape, START_GAIN, gen).to(sd[key].dtype)
    return sd


def random_state_dict(cfg: ModelConfig, seed: int = 0, scale: float = 1.0):
    """A random test model of cfg.version quickly: the official vectors and norms, then
    perturb_state_dict (the orthogonal matrices are skipped: perturbation replaces them and QR
    is slow). bf16, official key order."""
    if cfg.version in ("x060", "x052"):
        return perturb_state_dict(_v6_base_state_dict(cfg), seed, scale)
    return perturb_state_dict(_build_state_dict(cfg, None), seed, scale)


def _v6_layer_vectors(cfg: ModelConfig, l: int) -> dict[str, torch.Tensor]:
    """x060 official init; x052 gets the same curves as lerp weights (mix = 1 - maa)."""
    C, L = cfg.n_embd, cfg.n_layer
    r0, r1 = l / (L - 1), 1.0 - l / L
    n = torch.arange(C, dtype=torch.float64)
    ddd = n / C
    maa = {"w": 1 - ddd ** r1, "k": 1 - ddd ** r1, "v": 1 - (ddd ** r1 + 0.3 * r0),
           "r": 1 - ddd ** (0.5 * r1), "g": 1 - ddd ** (0.5 * r1)}
    ffn_maa = 1 - ddd ** (r1 ** 3)
    decay = -6 + 5 * (n / (C - 1)) ** (0.7 + 1.3 * r0)
    t = {"att.time_faaaa": r0 * (1 - n / (C - 1)) + 0.1 * ((n + 1) % 3 - 1)}
    if cfg.version == "x060":
        t.update({f"att.time_maa_{k}": v for k, v in maa.items()})
        t.update({"att.time_maa_x": 1 - ddd ** r1, "att.time_decay": decay,
                  "ffn.time_maa_k": ffn_maa, "ffn.time_maa_r": ffn_maa})
    else:
        t.update({f"att.time_mix_{k}": 1 - maa[k] for k in "kvrg"})
        t.update({"att.time_decay": decay, "ffn.time_mix_k": 1 - ffn_maa, "ffn.time_mix_r": 1 - ffn_maa})
    return t


def _v6_base_state_dict(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """x060 / x052 vectors and norms; every matrix zero (perturb_state_dict fills them)."""
    shapes = official_shapes(cfg)
    flat = {}
    for l in range(cfg.n_layer):
        flat.update({f"blocks.{l}.{k}": v for k, v in _v6_layer_vectors(cfg, l).items()})
    out = {}
    for k, shape in shapes.items():
        if k in flat:
            t = flat[k]
        elif k.endswith(".weight") and len(shape) == 1:
            t = torch.ones(shape)  # LayerNorm / GroupNorm gains
        else:
            t = torch.zeros(shape)
        out[k] = t.to(torch.bfloat16).reshape(shape).contiguous()
    return out


def _build_state_dict(cfg: ModelConfig, gen: torch.Generator | None) -> dict[str, torch.Tensor]:
    if cfg.version != "x070":
        raise UserError(f"init writes RWKV-7 (x070) models only, not {cfg.version}")
    C, V = cfg.n_embd, cfg.vocab_size
    emb = torch.zeros(V, C) if gen is None else torch.empty(V, C).uniform_(-1e-4, 1e-4, generator=gen)
    flat = {"emb.weight": emb}
    for l in range(cfg.n_layer):
        flat.update({f"blocks.{l}.{k}": v for k, v in _layer_tensors(cfg, l, gen).items()})
    flat.update({"ln_out.weight": torch.ones(C), "ln_out.bias": torch.zeros(C),
                 # gain 0.5, times sqrt(V/C) when V > C (the tall-matrix rule)
                 "head.weight": _orthogonal(V, C, 0.5, gen)})
    shapes = x070_shapes(cfg)
    return {k: flat[k].to(torch.bfloat16).reshape(shapes[k]).contiguous() for k in shapes}


_LINEARS = ("receptance.weight", "key.weight", "value.weight", "output.weight", "gate.weight")
_V6_MIXES = ("time_maa_x", "time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r", "time_maa_g",
             "time_mix_k", "time_mix_v", "time_mix_r", "time_mix_g")


def _perturb_v6(name: str, x: torch.Tensor, noise: torch.Tensor, scale: float):
    """RWKV-6/5 `time_*` tensors; None for any other name."""
    if name in _V6_MIXES:
        return (x + 0.2 * scale * noise).clamp(0, 1)          # lerp weights
    if name in ("time_maa_w1", "time_decay_w1"):
        return x + scale * noise / math.sqrt(x.shape[0])      # x @ w1: fan-in is dim 0
    if name == "time_maa_w2":                                 # (5, Dm, C): mix offsets ~0.1
        return x + 0.2 * scale * noise / math.sqrt(x.shape[1])
    if name == "time_decay_w2":
        return x + scale * noise / math.sqrt(x.shape[0])
    if name == "time_decay":                                  # w_ll over ~[-9, 2]: strong decays too
        return x + scale * noise
    return None


def perturb_state_dict(sd: dict[str, torch.Tensor], seed: int = 0, scale: float = 1.0):
    """Random weights of realistic magnitude (unit-variance projections, mixes in [0,1], decays
    spread over their whole range) so that every path of the model matters. Keeps dtypes."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, t in sd.items():
        x = t.float()
        noise = torch.randn(x.shape, generator=gen)
        name = k.rsplit(".", 1)[-1]
        v6 = _perturb_v6(name, x, noise, scale) if name.startswith("time_") else None
        if v6 is not None:
            x = v6
        elif k.endswith(_LINEARS) or k == "head.weight":
            x = x + scale * noise / math.sqrt(x.shape[-1])
        elif name in ("w1", "a1", "v1", "g1", "w2", "a2", "v2", "g2"):
            x = x + scale * noise / math.sqrt(x.shape[0])   # used as x @ w: fan-in is dim 0
        elif k == "emb.weight":
            x = x + scale * noise
        elif name.startswith("x_"):
            x = (x + 0.2 * scale * noise).clamp(0, 1)       # token-shift mixes are lerp weights
        elif name == "w0":
            x = x + scale * noise                           # decays over (0.545, 1) per channel
        else:                                               # norms, a0, v0, k_k, k_a, r_k
            x = x + 0.2 * scale * noise
        out[k] = x.to(t.dtype)
    return out
