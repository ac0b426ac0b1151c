"""What a PEFT method is: the record every method module exports as `METHOD`.

The registry (adapters/registry.py) maps names to these records; `parse_peft`, `inject`,
`--peft` choices, `checkpoint.merge`, `rwkvft merge` and the docs all read it, so a method's
knowledge lives in its own module only.

A method need not wrap an nn.Linear (a trainable initial WKV state does not): the protocol is
  name, aliases          `--peft` spellings
  keys                   accepted `--peft_config` keys -> their default (None: optional/no default)
  parse(d)               validated `AdapterConfig` from the JSON object (only known keys in d)
  inject(model, cfg)     add the method's modules/tensors to the model; return the parameter
                         names the method trains (inject() sets requires_grad from them)
  suffixes               local names of the method's tensors in adapter files
                         (`blocks.0.att.key.<suffix>`); merge uses them to group a file
and, for methods whose tensors fold into a Linear weight (every adapter so far):
  fits(parts, out_f, in_f, config) -> bool      do the tensors fit this (out, in) weight
  apply_delta(w, parts, config, sign) -> W'     THE maths: merged (sign +1) / unmerged (-1)
                                                fp32 weight; the layer's merged_weight() and
                                                checkpoint.merge both call it
`reference(model, cfg)`: the policy before training for DPO (adapters/reference.py).
Flags: `full_model` (the saved file is a whole official model: `--peft none`); `default_lr`
(the method's --lr_init when none is given: a state wants 1e-2).

`LinearMethod` implements `inject` for methods that wrap target Linears with an AdaptedLinear
subclass built by `make_layer(linear, name, cfg)`, with the shared keys r / target_modules /
layers (layer selection, HF peft's `layers_to_transform`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..errors import UserError
from ..models.schema import layer_of
from .config import AdapterConfig, parse_layers, parse_targets, positive_int
from .reference import adapters_off

V7_TARGETS = ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")
V6_TARGETS = ("att.receptance", "att.key", "att.value", "att.gate", "att.output",
              "ffn.key", "ffn.receptance", "ffn.value")
DEFAULT_TARGETS = {"x070": V7_TARGETS, "x060": V6_TARGETS, "x052": V6_TARGETS}
LINEAR_KEYS = ("r", "target_modules", "layers")


@dataclass(frozen=True)
class PeftMethod:
    name: str
    keys: dict[str, Any]
    parse: Callable[[dict], AdapterConfig]
    inject: Callable[[nn.Module, AdapterConfig], list[str]]
    suffixes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    fits: Callable[..., bool] | None = None
    apply_delta: Callable[..., Any] | None = None
    full_model: bool = False
    summary: str = ""              # one line for --help and the README table
    default_lr: float | None = None  # --lr_init when not given (None: TrainConfig's default)
    # (model, cfg) -> adapters.reference.Reference: the policy before training, for preference
    # objectives (None: the method has none; a Linear method's is its adapters switched off)
    reference: Callable[..., Any] | None = None


# ---------------------------------------------------------------- Linear-wrapping methods
def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def short_name(name: str) -> str:
    """'blocks.3.att.key' -> 'att.key' (the name users write in target_modules)."""
    return ".".join(name.split(".")[-2:])


def resolve_targets(model: nn.Module, cfg: AdapterConfig) -> list[str]:
    """Full module names of the Linears to wrap (target_modules, then layer selection)."""
    # The head is never adapted: the trainer reads head.weight directly (chunked loss);
    # train it fully with train_parts ["head"] instead.
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "head"]
    valid = sorted({short_name(n) for n in linears})
    if cfg.target_modules:
        wanted = cfg.target_modules
        for t in wanted:
            if not any(_matches(n, t) for n in linears):
                hint = " (train the head with train_parts [\"head\"])" if t == "head" else ""
                raise UserError(f"target module {t!r} matches no adaptable Linear layer{hint}; "
                                f"valid names: {', '.join(valid)}")
    else:
        version = getattr(getattr(model, "config", None), "version", None)
        wanted = DEFAULT_TARGETS.get(version, tuple(dict.fromkeys(V7_TARGETS + V6_TARGETS)))
    found = [n for n in linears if any(_matches(n, t) for t in wanted)]
    if not found:
        raise UserError(f"no Linear layer matches the targets {list(wanted)}; valid names: {', '.join(valid)}")
    return _select_layers(model, found, cfg.layers)


def _select_layers(model: nn.Module, names: list[str], layers: list[int] | None) -> list[str]:
    if layers is None:
        return names
    n_layer = len(getattr(model, "blocks", ())) or 1 + max((layer_of(n) or 0) for n in names)
    too_big = [l for l in layers if l >= n_layer]
    if too_big:
        raise UserError(f"--peft_config layers: the model has layers 0-{n_layer - 1}, "
                        f"so layer {too_big[0]} does not exist; choose layers below {n_layer}")
    return [n for n in names if layer_of(n) in layers]


def _set_child(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


@dataclass(frozen=True)
class LinearMethod:
    """Builds a PeftMethod for a method that wraps target Linears (see module docstring)."""
    name: str
    default_r: int
    keys: dict[str, Any]                      # method keys besides r / target_modules / layers
    options: Callable[[dict], dict]           # d -> method options (validated), incl. "dropout"
    make_layer: Callable[[nn.Linear, str, AdapterConfig], nn.Module]
    suffixes: tuple[str, ...]
    fits: Callable[..., bool]
    apply_delta: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    summary: str = ""

    def parse(self, d: dict) -> AdapterConfig:
        opts = self.options(d)
        return AdapterConfig(method=self.name, r=positive_int(d, "r", self.default_r),
                             dropout=opts.pop("dropout", 0.0), target_modules=parse_targets(d),
                             layers=parse_layers(d), options=opts)

    def inject(self, model: nn.Module, cfg: AdapterConfig) -> list[str]:
        names = resolve_targets(model, cfg)
        trained = []
        for name in names:
            layer = self.make_layer(model.get_submodule(name), name, cfg)
            _set_child(model, name, layer)
            trained += [f"{name}.{local}" for local in layer.adapter_param_names]
        cfg.targets = sorted({short_name(n) for n in names})
        return trained

    def method(self) -> PeftMethod:
        keys = {"r": self.default_r, "target_modules": None, "layers": None, **self.keys}
        return PeftMethod(name=self.name, keys=keys, parse=self.parse, inject=self.inject,
                          suffixes=self.suffixes, aliases=self.aliases, fits=self.fits,
                          apply_delta=self.apply_delta, summary=self.summary,
                          reference=adapters_off)
