"""Adapter configuration: `--peft <method> --peft_config '<json>'` -> AdapterConfig.

Only checks that need no model happen here (types, ranges, known keys). Checks that depend on a
layer's size (r > in_features, bat divisibility, mini_r) happen at injection, where the layer
name can be put in the message.

Accepted keys (defaults in brackets):
  miss:  r [64], mode ["default"; "bone" is an alias, "bat", "bat_in", "mini"], mini_r [1, only
         with mode "mini"], dropout / miss_dropout [0.0, ignored by bat], init_weights (HF
         spelling of mode: true, "bat", "mini"), target_modules
  lora:  r [8], lora_alpha / alpha [32], lora_dropout / dropout [0.0], target_modules
  pissa: r [8], svd_niter [null = exact SVD when min(out, in) <= 1024, else 4 iterations of
         torch.svd_lowrank], lora_dropout / dropout [0.0], target_modules (no alpha: scale is 1)
  state: init ["zero", "base"], prompt / prompt_tokens (init "base"); see adapters/state.py
"bat" follows HF peft (blocks indexed by output-row block); "bat_in" is RWKV-PEFT's variant
(indexed by input-column block), so adapters from either tool merge with the right maths.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from ..errors import UserError

METHODS = ("miss", "lora", "pissa", "state")
METHOD_ALIASES = {"disha": "miss", "bone": "miss"}  # RWKV-PEFT's older names for MiSS
MISS_MODES = ("default", "bat", "bat_in", "mini")
TRAIN_PARTS = ("ln", "time", "emb", "head")
# Below this size an exact SVD is cheap on CPU and GPU; above it randomized SVD is much faster.
EXACT_SVD_MAX_DIM = 1024
DEFAULT_SVD_NITER = 4

_COMMON_KEYS = {"r", "target_modules"}
_KEYS = {
    "miss": _COMMON_KEYS | {"mode", "mini_r", "dropout", "miss_dropout", "init_weights"},
    "lora": _COMMON_KEYS | {"lora_alpha", "alpha", "lora_dropout", "dropout"},
    "pissa": _COMMON_KEYS | {"svd_niter", "lora_dropout", "dropout"},
}
_DEFAULT_R = {"miss": 64, "lora": 8, "pissa": 8}


@dataclass
class AdapterConfig:
    method: str                     # "miss", "lora", "pissa"
    r: int
    mode: str = "default"           # miss only: default, bat, bat_in, mini
    mini_r: int = 0                 # miss mini only
    alpha: float = 0.0              # lora only (scale = alpha / r); pissa scale is 1
    dropout: float = 0.0
    svd_niter: int | None = None    # pissa only
    target_modules: list[str] | None = None   # user override (suffix match)
    init: str = ""                  # state only: "zero" or "base" (adapters/state.py)
    prompt_tokens: list[int] | None = None    # state init "base": the prompt's token ids
    # Filled in by inject(): the module suffixes actually wrapped and the unfrozen parts.
    targets: list[str] = field(default_factory=list)
    train_parts: list[str] = field(default_factory=list)

    @property
    def scale(self) -> float:
        return self.alpha / self.r if self.method == "lora" else 1.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AdapterConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _load_json(peft_config) -> dict:
    if peft_config is None or (isinstance(peft_config, str) and not peft_config.strip()):
        return {}
    if isinstance(peft_config, dict):
        return dict(peft_config)
    try:
        value = json.loads(peft_config)
    except json.JSONDecodeError as e:
        raise UserError(f"--peft_config is not valid JSON ({e.msg} at char {e.pos}): "
                        f"write it like '{{\"r\": 64}}' with double-quoted keys") from None
    if not isinstance(value, dict):
        raise UserError(f"--peft_config must be a JSON object like '{{\"r\": 64}}', got {peft_config!r}")
    return value


def _int(d: dict, key: str, default, lo: int) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise UserError(f"--peft_config: {key} must be an integer >= {lo}, got {v!r}")
    return v


def _float(d: dict, keys: tuple[str, ...], default: float, lo: float, hi: float,
           hi_open: bool = False) -> float:
    given = [k for k in keys if k in d]
    if len(given) > 1:
        raise UserError(f"--peft_config: give only one of {' / '.join(given)}")
    key = given[0] if given else keys[0]
    v = d.get(key, default)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or v < lo or v > hi or (hi_open and v == hi):
        rng = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
        raise UserError(f"--peft_config: {key} must be a number in {rng}, got {v!r}")
    return float(v)


def _targets(d: dict) -> list[str] | None:
    t = d.get("target_modules")
    if t is None:
        return None
    if isinstance(t, str):
        t = [t]
    if not isinstance(t, list) or not t or not all(isinstance(x, str) and x for x in t):
        raise UserError(f"--peft_config: target_modules must be a list of module names like "
                        f"[\"att.key\", \"ffn.value\"], got {t!r}")
    return list(t)


def _miss_mode(d: dict) -> str:
    if "init_weights" in d and "mode" in d:
        raise UserError("--peft_config: give either mode or init_weights (HF spelling), not both")
    if "init_weights" in d:
        iw = d["init_weights"]
        mode = {True: "default", "bat": "bat", "mini": "mini"}.get(iw) if isinstance(iw, (bool, str)) else None
        if mode is None:
            raise UserError(f"--peft_config: init_weights must be true, \"bat\" or \"mini\", got {iw!r} "
                            f"(random init is for tests only)")
        return mode
    mode = d.get("mode", "default")
    mode = "default" if mode == "bone" else mode
    if mode not in MISS_MODES:
        raise UserError(f"--peft_config: unknown MiSS mode {mode!r}; use one of {', '.join(MISS_MODES)}")
    return mode


def parse_peft(method: str, peft_config=None) -> AdapterConfig:
    """Validate `--peft METHOD --peft_config JSON` and return an AdapterConfig."""
    m = METHOD_ALIASES.get(str(method).lower(), str(method).lower())
    if m not in METHODS:
        raise UserError(f"unknown --peft method {method!r}; use one of {', '.join(METHODS)}")
    d = _load_json(peft_config)
    if m == "state":  # wraps no Linear: its own keys (adapters/state.py)
        from .state import parse_state_config
        return parse_state_config(d)
    unknown = sorted(set(d) - _KEYS[m])
    if unknown:
        raise UserError(f"--peft_config: unknown key {unknown[0]!r} for {m}; "
                        f"accepted keys: {', '.join(sorted(_KEYS[m]))}")
    r = _int(d, "r", _DEFAULT_R[m], 1)
    cfg = AdapterConfig(method=m, r=r, target_modules=_targets(d))
    if m == "miss":
        cfg.mode = _miss_mode(d)
        if "mini_r" in d and cfg.mode != "mini":
            raise UserError("--peft_config: mini_r is only used with \"mode\": \"mini\"; add it or drop mini_r")
        cfg.mini_r = _int(d, "mini_r", 1, 1) if cfg.mode == "mini" else 0
        cfg.dropout = _float(d, ("dropout", "miss_dropout"), 0.0, 0.0, 1.0, hi_open=True)
    elif m == "lora":
        cfg.alpha = _float(d, ("lora_alpha", "alpha"), 32.0, 1e-12, math.inf)
        cfg.dropout = _float(d, ("lora_dropout", "dropout"), 0.0, 0.0, 1.0, hi_open=True)
    else:
        niter = d.get("svd_niter")
        cfg.svd_niter = None if niter is None else _int(d, "svd_niter", None, 0)
        cfg.dropout = _float(d, ("lora_dropout", "dropout"), 0.0, 0.0, 1.0, hi_open=True)
    return cfg
