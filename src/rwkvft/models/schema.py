"""The RWKV checkpoint schema: what a model of each version holds, read from tensors alone.

ModelConfig, the version names and labels, the official key -> shape tables (as the
architecture spec lists them), `infer_config` (every size from tensor shapes, never from user flags), the
checks of user-given sizes, and the parameter groups `train_parts` names (ln / time / emb /
head). `rwkvft.formats` (file I/O) and `rwkvft.models` (the modules) both build on this
module; it imports neither of them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import Checks, UserError


# ---------------------------------------------------------------------------------------------
# the config

@dataclass
class ModelConfig:
    version: str          # "x070", "x060", "x052"
    n_layer: int
    n_embd: int
    vocab_size: int
    head_size: int        # N (64 in released models)
    dim_ffn: int
    # RWKV-7 low-rank dims (0 when not applicable)
    d_decay: int = 0      # Dw = att.w1.shape[1]     (v6: time_decay_w1.shape[1])
    d_aaa: int = 0        # Da = att.a1.shape[1]
    d_mv: int = 0         # Dv = blocks.1.att.v1.shape[1]
    d_gate: int = 0       # Dg = att.g1.shape[1]
    d_mix: int = 0        # v6 Dm = time_maa_w1.shape[1] // 5
    layer0_v: bool = True # x070: file has blocks.0.att.v0/v1/v2

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size


# ---------------------------------------------------------------------------------------------
# versions

# accepted spellings of each version (--my_testing, `rwkvft init --version`)
_VERSIONS = {"x070": ("7", "v7", "x070", "rwkv7", "rwkv-7"),
             "x060": ("6", "v6", "x060", "rwkv6", "rwkv-6"),
             "x052": ("5", "v5", "x052", "5.2", "v5.2", "rwkv5", "rwkv-5")}
VERSIONS = tuple(_VERSIONS)
VERSION_LABELS = {"x070": "RWKV-7", "x060": "RWKV-6", "x052": "RWKV-5.2"}
# vectors stored (1,1,C) in official files; HF/fla conversions and squeezed dumps use (C,)
X070_VECTORS = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "v0", "k_k", "k_a")
# RWKV-6 (att and ffn) and RWKV-5.2 (1,1,C) vectors: the token-shift mixes and v6's decay bias
X060_VECTORS = ("time_maa_x", "time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r",
                "time_maa_g", "time_decay")
X052_VECTORS = ("time_mix_k", "time_mix_v", "time_mix_r", "time_mix_g")


# ---------------------------------------------------------------------------------------------
# architecture inference

def infer_config(sd: dict[str, torch.Tensor]) -> ModelConfig:
    """Read version and every size from tensor shapes alone, then check that every
    official tensor is present with its shape."""
    if "_strategy" in sd:
        raise UserError("this checkpoint was pre-converted by the rwkv pip package (it has "
                        "'_strategy'); use the original .pth instead")
    n_layer = _count_layers(sd)
    version = detect_version(sd)
    if version == "x070":
        cfg = _infer_x070(sd, n_layer)
        check_tensors(sd, cfg)
        return cfg
    cfg = _infer_x060(sd, n_layer) if version == "x060" else _infer_x052(sd, n_layer)
    check_tensors(sd, cfg)
    return cfg


def detect_version(sd) -> str:
    keys = set(sd)
    if "emb.weight" not in keys or "blocks.0.ln1.weight" not in keys:
        raise UserError(f"unknown architecture: not an RWKV checkpoint (keys seen: {_some_keys(sd)})")
    if any(".ffn.s_emb." in k or k.endswith(".ffn.s1") for k in keys):
        raise UserError("this is an RWKV-7 DeepEmbed checkpoint, which rwkvft does not support; "
                        "use a plain RWKV-7 (x070) model")
    if "blocks.0.att.r_k" in keys or "blocks.0.att.x_r" in keys:
        return "x070"
    if "blocks.0.att.time_maa_x" in keys:
        return "x060"
    decay = sd.get("blocks.0.att.time_decay")
    if ("blocks.0.att.ln_x.weight" in keys and "blocks.0.att.gate.weight" in keys
            and decay is not None and decay.dim() == 2):
        return "x052"
    raise UserError(f"unsupported architecture (RWKV-4 / RWKV-5.0 or unknown; keys seen: "
                    f"{_some_keys(sd)}); use an RWKV-7 (x070), RWKV-6 (x060) or RWKV-5.2 (x052) "
                    f"checkpoint")


def _some_keys(sd, n: int = 5) -> str:
    keys = list(sd)
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} keys)" if len(keys) > n else "")


def _count_layers(sd) -> int:
    layers = set()
    for k in sd:
        if k.startswith("blocks."):
            field = k.split(".")[1]
            if not field.isdigit():
                raise UserError(f"malformed checkpoint key {k!r}: the field after 'blocks.' must be "
                                f"a layer number; check how the file was produced")
            layers.add(int(field))
    if not layers:
        raise UserError(f"unknown architecture: no 'blocks.N.' keys (keys seen: {_some_keys(sd)})")
    missing = sorted(set(range(max(layers) + 1)) - layers)
    if missing:
        raise UserError(f"checkpoint lacks layer(s) {missing[:5]} below its last layer {max(layers)}; "
                        f"the file is incomplete, re-download or re-export it")
    return max(layers) + 1


def _infer_x070(sd, n_layer: int) -> ModelConfig:
    vocab_size, n_embd = sd["emb.weight"].shape
    r_k = sd["blocks.0.att.r_k"]
    # (H, N) in official files; a flattened (C,) r_k carries no head count: assume N = 64,
    # the only head size of released RWKV-7 models
    head_size = r_k.shape[-1] if r_k.dim() == 2 else 64
    v1 = sd.get("blocks.1.att.v1", sd.get("blocks.0.att.v1"))
    return ModelConfig(
        version="x070", n_layer=n_layer, n_embd=n_embd, vocab_size=vocab_size, head_size=head_size,
        dim_ffn=sd["blocks.0.ffn.key.weight"].shape[0],
        d_decay=sd["blocks.0.att.w1"].shape[1], d_aaa=sd["blocks.0.att.a1"].shape[1],
        d_mv=0 if v1 is None else v1.shape[1], d_gate=sd["blocks.0.att.g1"].shape[1],
        layer0_v="blocks.0.att.v0" in sd)


def _require(sd, keys, what: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise UserError(f"{what} checkpoint is missing {', '.join(missing[:3])}; "
                        f"the file is incomplete, re-download or re-export it")


def _infer_x060(sd, n_layer: int) -> ModelConfig:
    a = "blocks.0.att."
    _require(sd, (a + "time_faaaa", a + "time_maa_w1", a + "time_decay_w1", "blocks.0.ffn.key.weight"),
             "RWKV-6")
    vocab_size, n_embd = sd["emb.weight"].shape
    maa_w1 = sd[a + "time_maa_w1"]
    if maa_w1.dim() != 2 or maa_w1.shape[1] % 5:
        raise UserError(f"tensor {a}time_maa_w1 has shape {tuple(maa_w1.shape)}, expected (C, 5*Dm) "
                        f"(one block per mix w, k, v, r, g); the file is inconsistent, re-export it")
    return ModelConfig(
        version="x060", n_layer=n_layer, n_embd=n_embd, vocab_size=vocab_size,
        head_size=_head_size(sd[a + "time_faaaa"]), dim_ffn=sd["blocks.0.ffn.key.weight"].shape[0],
        d_decay=sd[a + "time_decay_w1"].shape[1], d_mix=maa_w1.shape[1] // 5, layer0_v=False)


def _infer_x052(sd, n_layer: int) -> ModelConfig:
    _require(sd, ("blocks.0.ffn.key.weight",), "RWKV-5")
    vocab_size, n_embd = sd["emb.weight"].shape
    return ModelConfig(
        version="x052", n_layer=n_layer, n_embd=n_embd, vocab_size=vocab_size,
        head_size=_head_size(sd["blocks.0.att.time_decay"]),  # (H, N): detect_version checked 2-D
        dim_ffn=sd["blocks.0.ffn.key.weight"].shape[0], layer0_v=False)


def _head_size(per_head: torch.Tensor) -> int:
    # (H, N) in official files; a flattened (C,) tensor carries no head count: assume N = 64,
    # the head size of every released RWKV-5/6/7 model
    return per_head.shape[-1] if per_head.dim() == 2 else 64


def official_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every key of an official file of cfg.version with its official shape, in order."""
    if cfg.version == "x070":
        return x070_shapes(cfg)
    if cfg.version in ("x060", "x052"):
        return x060_shapes(cfg) if cfg.version == "x060" else x052_shapes(cfg)
    raise UserError(f"unknown model version {cfg.version!r}; use x070, x060 or x052")


def _layout(cfg: ModelConfig, layer_tensors) -> dict[str, tuple[int, ...]]:
    """The order every RWKV file shares: emb; per layer ln0 (layer 0), ln1, ln2, then
    `layer_tensors(prefix, layer)`; ln_out; head."""
    C, V = cfg.n_embd, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"emb.weight": (V, C)}
    for l in range(cfg.n_layer):
        p = f"blocks.{l}."
        for ln in (("ln0", "ln1", "ln2") if l == 0 else ("ln1", "ln2")):
            shapes.update({f"{p}{ln}.weight": (C,), f"{p}{ln}.bias": (C,)})
        shapes.update(layer_tensors(p, l))
    shapes.update({"ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (V, C)})
    return shapes


def _v6_family_shapes(cfg: ModelConfig, att_params, ffn_mixes) -> dict[str, tuple[int, ...]]:
    """RWKV-5.2/6 layout: version-specific att parameters, then the shared projections."""
    C, F = cfg.n_embd, cfg.dim_ffn

    def layer(p: str, l: int) -> dict:
        t = {f"{p}att.{name}": shape for name, shape in att_params.items()}
        t.update({f"{p}att.{name}.weight": (C, C)
                  for name in ("receptance", "key", "value", "output", "gate")})
        t.update({p + "att.ln_x.weight": (C,), p + "att.ln_x.bias": (C,)})
        t.update({f"{p}ffn.{name}": (1, 1, C) for name in ffn_mixes})
        t.update({p + "ffn.key.weight": (F, C), p + "ffn.receptance.weight": (C, C),
                  p + "ffn.value.weight": (C, F)})
        return t

    return _layout(cfg, layer)


def x060_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every key of an official RWKV-6 file with its official shape, in order."""
    C, H, N, Dm, Dd = cfg.n_embd, cfg.n_head, cfg.head_size, cfg.d_mix, cfg.d_decay
    att = {name: (1, 1, C) for name in X060_VECTORS[:-1]}
    att.update({"time_maa_w1": (C, 5 * Dm), "time_maa_w2": (5, Dm, C), "time_decay": (1, 1, C),
                "time_decay_w1": (C, Dd), "time_decay_w2": (Dd, C), "time_faaaa": (H, N)})
    return _v6_family_shapes(cfg, att, ("time_maa_k", "time_maa_r"))


def x052_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every key of an official RWKV-5.2 file with its official shape, in order."""
    C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
    att = {name: (1, 1, C) for name in X052_VECTORS}
    att.update({"time_decay": (H, N), "time_faaaa": (H, N)})
    return _v6_family_shapes(cfg, att, ("time_mix_k", "time_mix_r"))


def x070_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every key of an official RWKV-7 file with its official shape, in the recommended order."""
    C, F = cfg.n_embd, cfg.dim_ffn
    vec = (1, 1, C)

    def layer(p: str, l: int) -> dict:
        a = p + "att."
        t = {a + name: vec for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0")}
        t.update({a + "w1": (C, cfg.d_decay), a + "w2": (cfg.d_decay, C), a + "a0": vec,
                  a + "a1": (C, cfg.d_aaa), a + "a2": (cfg.d_aaa, C)})
        if l > 0 or cfg.layer0_v:
            t.update({a + "v0": vec, a + "v1": (C, cfg.d_mv), a + "v2": (cfg.d_mv, C)})
        t.update({a + "g1": (C, cfg.d_gate), a + "g2": (cfg.d_gate, C), a + "k_k": vec,
                  a + "k_a": vec, a + "r_k": (cfg.n_head, cfg.head_size)})
        t.update({f"{a}{name}.weight": (C, C) for name in ("receptance", "key", "value", "output")})
        t.update({a + "ln_x.weight": (C,), a + "ln_x.bias": (C,), p + "ffn.x_k": vec,
                  p + "ffn.key.weight": (F, C), p + "ffn.value.weight": (C, F)})
        return t

    return _layout(cfg, layer)


def check_tensors(sd, cfg: ModelConfig) -> None:
    """Every official key of cfg.version present with its shape. (C,) is accepted for the
    (1,1,C) vectors and the per-head (H,N) tensors (squeezed / HF-converted files)."""
    label = VERSION_LABELS.get(cfg.version, cfg.version)
    if cfg.n_embd % cfg.head_size:
        raise UserError(f"n_embd {cfg.n_embd} is not a multiple of the head size {cfg.head_size}; "
                        f"the checkpoint is inconsistent")
    want = official_shapes(cfg)
    missing = [k for k in want if k not in sd]
    if missing:
        raise UserError(f"{label} checkpoint is missing {len(missing)} tensor(s), e.g. "
                        f"{', '.join(missing[:3])}; the file is incomplete, re-download or re-export it")
    for k, shape in want.items():
        got = tuple(sd[k].shape)
        if got != shape and not (got == (cfg.n_embd,) and is_vector_key(k, cfg.version)):
            raise UserError(f"tensor {k} has shape {got}, expected {shape} for this {label} model; "
                            f"the file is inconsistent, re-export it")
    not_float = [k for k in want if not sd[k].is_floating_point()]
    if not_float:  # integer weights cannot be trained or multiplied with float activations
        k = not_float[0]
        raise UserError(f"tensor {k} is {str(sd[k].dtype).removeprefix('torch.')} "
                        f"({len(not_float)} tensor(s) are not floating point); RWKV weights are "
                        f"bf16/fp16/fp32: re-export the checkpoint with float tensors")


def is_vector_key(key: str, version: str) -> bool:
    """Keys whose official shape is (1,1,C) or per-head (H,N) but may be stored flat as (C,)."""
    name = key.rsplit(".", 1)[-1]
    if version == "x070":
        return name in X070_VECTORS + ("r_k",)
    if version == "x060":
        return name in X060_VECTORS + ("time_faaaa",)
    return name in X052_VECTORS + ("time_faaaa",)


# ---------------------------------------------------------------------------------------------
# user-given sizes

def normalize_version(version: str) -> str:
    v = version.strip().lower()
    for name, aliases in _VERSIONS.items():
        if v in aliases:
            return name
    raise UserError(f"unknown model version {version!r}; use x070 (RWKV-7), x060 (RWKV-6) or x052")


def check_against(cfg: ModelConfig, n_layer: int = 0, n_embd: int = 0, vocab_size: int = 0,
                  head_size: int = 0, version: str = "") -> None:
    """Raise UserError when user-given (non-zero / non-empty) sizes contradict the checkpoint
    (every contradiction, one line each)."""
    checks = Checks()
    given = {"n_layer": n_layer, "n_embd": n_embd, "vocab_size": vocab_size, "head_size": head_size}
    for name, value in given.items():
        if value and int(value) != getattr(cfg, name):
            checks.add(f"--{name} {value} contradicts the checkpoint, which has {name} "
                       f"{getattr(cfg, name)}; drop the flag or pass {getattr(cfg, name)}")
    if version and normalize_version(version) != cfg.version:
        checks.add(f"version {version!r} contradicts the checkpoint, which is {cfg.version}; "
                   f"drop the flag or pass {cfg.version}")
    checks.raise_if_any()

# ---------------------------------------------------------------------------------------------
# parameter groups (train_parts)

PARAM_GROUPS = ("ln", "time", "emb", "head")
_LN = re.compile(r"(^|\.)(ln0|ln1|ln2|ln_x|ln_out)\.(weight|bias)$")
_V7_TIME = re.compile(r"(^|\.)(att\.(x_[rwkvag]|w0|a0|v0|k_k|k_a|r_k|[wavg][12])|ffn\.x_k)$")
_V6_TIME = re.compile(r"(^|\.)time_(?!state$)[A-Za-z0-9_]+$")  # time_state: --peft state
# Some x070 files carry layer-0 att.v0/v1/v2, which the model never uses (layer 0 makes
# v_first). Training them would only give DDP unused parameters and the optimizer dead state.
LAYER0_UNUSED = re.compile(r"(^|\.)blocks\.0\.att\.v[012]$")
_GROUP_MATCH = {
    "ln": lambda n: bool(_LN.search(n)),
    "time": lambda n: bool((_V7_TIME.search(n) and not LAYER0_UNUSED.search(n)) or _V6_TIME.search(n)),
    "emb": lambda n: n.startswith("emb."),
    "head": lambda n: n.startswith("head."),
}


def in_group(name: str, group: str) -> bool:
    """Whether parameter `name` belongs to train part `group` (one of PARAM_GROUPS)."""
    return _GROUP_MATCH[group](name)


def param_group(name: str) -> str | None:
    """The train part holding parameter `name`, or None (projection weights, adapters)."""
    return next((g for g in PARAM_GROUPS if _GROUP_MATCH[g](name)), None)


def layer_of(name: str) -> int | None:
    """'blocks.3.att.key.weight' -> 3; None for names outside the blocks."""
    parts = name.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None
