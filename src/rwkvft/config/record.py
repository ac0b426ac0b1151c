"""What is derived from the flag declaration: `FLAGS`, the range table `RANGES` and the
`TrainConfig` record (one dataclass field per flag; `to_json` is train_config.json).

`declare(flag)` adds a flag at run time (a plugin, or the test that proves a flag needs no other
edit) and `undeclare(name)` removes it; both rebuild these in place, so code that imported
`TrainConfig` or `RANGES` sees the change.
"""
from __future__ import annotations

import dataclasses
import json

from .flag import Flag
from .flags import DECLARED, IGNORED_FLAGS
from .ranges import Range

FLAGS: dict[str, Flag] = {}
RANGES: dict[str, Range] = {}


class TrainConfig:
    """Every `rwkvft train` setting; its fields are the declared flags (config/flags.py)."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


_GENERATED = ("__init__", "__repr__", "__eq__", "__hash__", "__match_args__",
              "__dataclass_fields__", "__dataclass_params__")


def _rebuild() -> None:
    """Make TrainConfig's dataclass fields exactly FLAGS (in declaration order), in place."""
    for name in _GENERATED:
        if name in TrainConfig.__dict__:
            delattr(TrainConfig, name)
    for name in list(TrainConfig.__dict__.get("__annotations__", {})):
        if name in TrainConfig.__dict__:
            delattr(TrainConfig, name)
    TrainConfig.__annotations__ = {}
    for f in FLAGS.values():
        TrainConfig.__annotations__[f.name] = f.type.__name__
        value = dataclasses.field(default_factory=f.fresh_default) if isinstance(f.default, list) \
            else f.default
        setattr(TrainConfig, f.name, value)
    dataclasses.dataclass(TrainConfig)
    RANGES.clear()
    RANGES.update({f.name: f.range for f in FLAGS.values() if f.range is not None})


def declare(flag: Flag) -> None:
    """Add a flag (UserError-free: a programming error raises ValueError)."""
    if flag.name in FLAGS or flag.name in IGNORED_FLAGS or flag.name in ("config", "debug"):
        raise ValueError(f"flag --{flag.name} is already declared")
    _check(flag)
    FLAGS[flag.name] = flag
    _rebuild()


def _check(flag: Flag) -> None:
    numeric = isinstance(flag.default, (int, float)) and not isinstance(flag.default, bool)
    if numeric != (flag.range is not None):
        raise ValueError(f"flag --{flag.name}: a numeric flag needs a Range, and only it")
    if bool(flag.must_match) == bool(flag.safe):
        raise ValueError(f"flag --{flag.name}: give exactly one of must_match= or safe= (may "
                         f"--resume change it? training/resume_rules.py)")


def undeclare(name: str) -> None:
    FLAGS.pop(name)
    _rebuild()


def data_flags() -> list[Flag]:
    """Flags copied by name into training's DataConfig."""
    return [f for f in FLAGS.values() if f.data]


def eval_flags() -> list[Flag]:
    """Flags `rwkvft eval` takes (and reads from a run's train_config.json)."""
    return [f for f in FLAGS.values() if f.eval]


for _flag in DECLARED:
    _check(_flag)
    FLAGS[_flag.name] = _flag
_rebuild()
