"""Flag values -> a checked TrainConfig: defaults < --config FILE < flags on the command line."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..adapters import registry as peft_registry
from ..errors import UserError, quote
from ..utils import note
from .arguments import parse_bool
from .flags import IGNORED_FLAGS
from .record import FLAGS, TrainConfig
from .validate import validate


def load_config_file(path: str) -> dict:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"--config {p} is a directory; give the YAML or JSON file inside it")
    if not p.is_file():
        raise UserError(f"--config file not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"--config {p} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
                        f"offset {e.start}); save it as UTF-8") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"cannot parse --config {p}: {quote(e)}") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {p} must hold a mapping of flag names to values")
    return data


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < --config file < flags given on the command line; then validate."""
    values: dict = {}
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    given = {k: v for k, v in vars(args).items() if k not in ("command", "debug", "config")}
    values.update(given)
    return config_from_values(values)


def config_from_values(values: dict) -> TrainConfig:
    """A checked TrainConfig from {flag name: value} (the rest default); the Python API's train."""
    unknown = sorted(set(values) - set(FLAGS) - set(IGNORED_FLAGS))
    if unknown:
        raise UserError(f"unknown setting(s) in --config: {', '.join(unknown)}; "
                        f"see `rwkvft train --help` for the valid names")
    cfg = TrainConfig()
    for k, v in values.items():
        if k in FLAGS:
            setattr(cfg, k, coerce(k, v))
    _canonical_method(cfg)
    if "lr_init" not in values and cfg.peft in peft_registry.names():
        # a method may want another LR (a state wants a far larger one: adapters/state.py)
        cfg.lr_init = peft_registry.get(cfg.peft).default_lr or cfg.lr_init
    validate(cfg)
    for k in sorted(set(values) & set(IGNORED_FLAGS)):
        note(f"--{k} is accepted for RWKV-PEFT scripts but ignored: {IGNORED_FLAGS[k]}")
    return cfg


def _canonical_method(cfg: TrainConfig) -> None:
    """--peft bone / disha (RWKV-PEFT's earlier names of MiSS) train MiSS: say so, use its name."""
    try:
        method = peft_registry.get(cfg.peft)
    except UserError:
        return   # validate() names the choices
    if method.name != cfg.peft:
        note(f"--peft {cfg.peft} is RWKV-PEFT's name for what rwkvft calls --peft {method.name}; "
             f"training {method.name}")
        cfg.peft = method.name


def coerce(name: str, value):
    """A value from a --config file (or the command line) as the flag's type, or UserError."""
    default = FLAGS[name].default
    if name == "peft_config":
        if isinstance(value, dict):
            return json.dumps(value)
        if not isinstance(value, str):
            raise UserError(f"peft_config must be a mapping like {{r: 64}} (YAML) or a JSON "
                            f"object string, got {value!r}")
        return value
    try:
        if isinstance(default, bool):
            return parse_bool(value) if not isinstance(value, bool) else value
        if isinstance(default, list):
            return list(value) if isinstance(value, (list, tuple)) else [value]
        if isinstance(default, int) and (isinstance(value, bool) or
                                         (isinstance(value, float) and not value.is_integer())):
            raise ValueError(value)  # int(1.5) would silently drop the fraction
        if isinstance(default, (int, float)) and isinstance(value, (list, dict)):
            raise TypeError(value)
        return type(default)(value)
    except (TypeError, ValueError, OverflowError, argparse.ArgumentTypeError):
        raise UserError(f"{name}: expected {type(default).__name__}, got {value!r}") from None

