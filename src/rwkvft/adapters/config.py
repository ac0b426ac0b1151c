"""Adapter configuration: the record `parse_peft` returns and the validators methods share.

Only checks that need no model happen at parse time (types, ranges, known keys). Checks that
depend on a layer's size (r > in_features, bat divisibility, mini_r) or on the model (a layer
index beyond n_layer) happen at injection, where the layer name can be put in the message.
Each method's own keys and defaults are declared in its module (miss.py, lora.py, ...);
`rwkvft.adapters.registry.parse_peft` dispatches to it.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from ..errors import UserError

MAX_LAYERS = 4096  # far above any RWKV model; bounds a "layers" range before it becomes a list


@dataclass
class AdapterConfig:
    method: str                     # a registered method name ("miss", "lora", "pissa", "none")
    r: int = 0                      # 0: the method has no rank (none)
    dropout: float = 0.0
    target_modules: list[str] | None = None   # user override (suffix match)
    layers: list[int] | None = None           # layer selection (None = every layer)
    # The method's own options (miss: mode, mini_r; lora: alpha; pissa: svd_niter), read as
    # attributes (cfg.mode) and written flat into adapter_config.json.
    options: dict = field(default_factory=dict)
    # Filled in by inject(): the module suffixes actually wrapped and the unfrozen parts.
    targets: list[str] = field(default_factory=list)
    train_parts: list[str] = field(default_factory=list)

    def __getattr__(self, name):
        # only called when normal lookup fails: the method's options
        options = self.__dict__.get("options") or {}
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__} of method {self.__dict__.get('method')!r} "
                             f"has no option {name!r}")

    @property
    def scale(self) -> float:
        """Adapter output scale: alpha / r for methods with an alpha (LoRA), else 1."""
        alpha = self.options.get("alpha")
        return alpha / self.r if alpha is not None else 1.0

    def to_dict(self) -> dict:
        d = {"method": self.method, "r": self.r, "dropout": self.dropout,
             "target_modules": self.target_modules, "layers": self.layers,
             "targets": list(self.targets), "train_parts": list(self.train_parts)}
        d.update(self.options)
        return d


def load_json(peft_config) -> dict:
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


def positive_int(d: dict, key: str, default, lo: int = 1) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise UserError(f"--peft_config: {key} must be an integer >= {lo}, got {v!r}")
    return v


def number(d: dict, keys: tuple[str, ...], default: float, lo: float, hi: float,
           hi_open: bool = False) -> float:
    """The value of whichever of `keys` (synonyms) is given, checked to lie in [lo, hi]."""
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


def dropout(d: dict, keys: tuple[str, ...]) -> float:
    return number(d, keys, 0.0, 0.0, 1.0, hi_open=True)


def parse_targets(d: dict) -> list[str] | None:
    t = d.get("target_modules")
    if t is None:
        return None
    if isinstance(t, str):
        t = [t]
    if not isinstance(t, list) or not t or not all(isinstance(x, str) and x for x in t):
        raise UserError(f"--peft_config: target_modules must be a list of module names like "
                        f"[\"att.key\", \"ffn.value\"], got {t!r}")
    return list(t)


def parse_layers(d: dict) -> list[int] | None:
    """`"layers": [0, 1, 2]` or `"layers": "12-23"` (inclusive) -> sorted layer indices."""
    v = d.get("layers")
    if v is None:
        return None
    hint = "write it like [0, 1, 2] or \"12-23\" (both ends included)"
    if isinstance(v, str):
        # ASCII digits only: str.isdigit() accepts "²", which int() then refuses
        m = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", v)
        if not m:
            raise UserError(f"--peft_config: layers {v!r} is not a layer range; {hint}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UserError(f"--peft_config: layers {v!r} ends before it starts; {hint}")
        if hi >= MAX_LAYERS:  # the list is built below: "0-1000000000000000" would exhaust memory
            raise UserError(f"--peft_config: layers {v!r} goes past layer {MAX_LAYERS - 1}, more "
                            f"than any RWKV model has; give layers of this model")
        return list(range(lo, hi + 1))
    if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool)
                                                   and x >= 0 for x in v):
        raise UserError(f"--peft_config: layers must be a non-empty list of layer numbers >= 0 "
                        f"or a range, got {v!r}; {hint}")
    return sorted(set(v))
