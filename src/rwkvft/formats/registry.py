"""The format registry: every file format rwkvft reads or writes is one module of this package
that registers one `Format` record; `--load_model`, merge, export, inspect, `--adapter_init`,
generate and eval all go through the functions below, never through a module by name.

A record declares
  name, kind       registry key (the `export --format` / `merge --format` value); "model",
                   "adapter" or "state"
  what             one line: what the file is (inspect, --help)
  recognise(path)  cheap test on the path (suffix, files in a folder); for files holding raw
                   tensors `claims(path, sd)` decides on the tensors (inspect's order below)
  read(path)       model: -> official state dict; adapter: -> (tensors in our names, config);
                   state: -> {blocks.i.att.time_state: (H,N,N) fp32 [value, key]} (+ meta)
  write(sd, path, dtype)                         model formats that store a whole model
  export(base_sd, adapter_sd, config, output, options) -> lines to print   (export targets)
  needs            what the adapter's method must declare for `export`: "low_rank",
                   "hf_peft", "weights" (merges_into_weights) or "initial_state" (carries_state);
                   anything else is refused by the method's own declaration (`require`)
  output           "file" or "folder" (export's --output)
  describe(path, sd) -> dict     inspect's fields (None: the kind's default)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError

KINDS = ("model", "adapter", "state")


@dataclass(frozen=True)
class Format:
    name: str
    kind: str
    what: str
    recognise: Callable[[Path], bool]
    read: Callable[..., Any] | None = None
    write: Callable[..., Any] | None = None
    export: Callable[..., list] | None = None
    needs: str = ""
    output: str = "file"
    claims: Callable[[Path, dict], bool] | None = None
    describe: Callable[[Path, Any], dict] | None = None
    options: dict = field(default_factory=dict)   # export options it accepts -> help


_FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    if fmt.name in _FORMATS:
        raise ValueError(f"format {fmt.name!r} is already registered")
    if fmt.kind not in KINDS:
        raise ValueError(f"format kind must be one of {KINDS}, got {fmt.kind!r}")
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    _FORMATS.pop(name, None)


def formats(kind: str | None = None) -> tuple[Format, ...]:
    return tuple(f for f in _FORMATS.values() if kind is None or f.kind == kind)


def get(name: str) -> Format:
    if name not in _FORMATS:
        raise UserError(f"unknown format {name!r}; use one of {', '.join(_FORMATS)}")
    return _FORMATS[name]


def export_targets() -> tuple[Format, ...]:
    return tuple(f for f in _FORMATS.values() if f.export is not None)


def reader_of(path, kind: str) -> Format:
    """The first registered `kind` format that recognises `path` (registration order)."""
    p = Path(path)
    for f in _FORMATS.values():
        if f.kind == kind and f.read is not None and f.recognise(p):
            return f
    return None


# ---------------------------------------------------------------- what a method can go to
def require(fmt: Format, method, config: dict) -> None:
    """UserError when `fmt` cannot hold `method`'s adapter, from the method's own declaration."""
    label = method.describe(config)
    if fmt.needs == "initial_state" and not method.carries_state:
        raise UserError(f"--format {fmt.name} writes an initial state, but a {label} adapter holds "
                        f"no time_state; state formats need a --peft state adapter")
    if fmt.needs == "weights" and not method.merges_into_weights:
        raise UserError(f"--format {fmt.name} cannot hold a {label} adapter: {method.why_not()}")
    if fmt.needs == "low_rank" and method.low_rank is None:
        raise UserError(f"--format {fmt.name} cannot hold a {label} adapter: {method.why_not()}")
    if fmt.needs == "hf_peft" and method.hf_peft is None:
        raise UserError(f"--format {fmt.name} cannot hold a {label} adapter: HF peft has no such "
                        f"adapter ({method.why_not()})")
