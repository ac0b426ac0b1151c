"""What a PEFT method is: the record every method module exports as `METHOD`.

The registry (adapters/registry.py) maps names to these records; `parse_peft`, `inject`,
`--peft` choices, `adapters.merge`, `rwkvft merge` and the docs all read it, so a method's
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
                                                adapters.merge both call it
`reference(model, cfg)`: the policy before training for DPO (adapters/reference.py).
Flags: `full_model` (the saved file is a whole official model: `--peft none`); `default_lr`
(the method's --lr_init when none is given: a state wants 1e-2).

Interop: what the formats (rwkvft.formats) and preference tuning need to know, declared here
so that no other module compares a method's name:
  label(config) -> str        the method as `inspect` / `merge` / `export` print it
  low_rank(parts, config, W)  -> (up (out, k), down (k, in), scale): dW = scale * up @ down,
                              exactly (`low_rank_kind` "exact") or None: the method "cannot"
                              (Ai00 LoRA and HF peft LoRA then refuse it, saying `cannot`)
  hf_peft(groups, config, base_sd) -> ({prefix: {peft parameter: tensor}}, peft config dict)
                              or None (HF peft has no such adapter: hf-peft refuses it)
  alpha_key                   the option `--lora_alpha` sets on merge/export (None: refused)
  merges_into_weights         its effect folds into the model's weights (merged model formats)
  carries_state               its file is an initial WKV state (Runner / Ai00 state formats)
  merge(base_sd, adapter_sd, config, merge_rest) -> sd    own merge (state); None: apply_delta
  check_merged(version)       UserError when a merged model of `version` cannot carry it
  reference(model)            context manager: inside it the adapted model computes the base
                              model's output (PiSSA: the ORIGINAL weight); None: "cannot"
  cannot                      why the method has no low-rank / peft form (message tail)

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
from .reference import adapters_off, layers_in_reference_mode

V7_TARGETS = ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")
V6_TARGETS = ("att.receptance", "att.key", "att.value", "att.gate", "att.output",
              "ffn.key", "ffn.receptance", "ffn.value")
DEFAULT_TARGETS = {"x070": V7_TARGETS, "x060": V6_TARGETS, "x052": V6_TARGETS}


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
    # ---- interop (module docstring)
    label: Callable[[dict], str] | None = None
    low_rank: Callable[..., Any] | None = None
    low_rank_kind: str = "cannot"
    hf_peft: Callable[..., Any] | None = None
    alpha_key: str | None = None
    carries_state: bool = False
    merge: Callable[..., dict] | None = None
    check_merged: Callable[[str], None] | None = None
    # (model, cfg) -> adapters.reference.Reference: the policy before training, for preference
    # objectives (None: the method has none; a Linear method's is its adapters switched off)
    reference: Callable[..., Any] | None = None
    # model -> context manager inside which the adapted model computes the BASE model (adapter_off)
    switch_off: Callable[[nn.Module], Any] | None = None
    cannot: str = ""

    @property
    def merges_into_weights(self) -> bool:
        return self.apply_delta is not None or self.full_model

    def describe(self, config) -> str:
        """The method as inspect / merge / export print it (e.g. "miss bat")."""
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
        return self.label(config) if self.label else self.name

    def factors(self, parts: dict, config: dict, weight, target: str):
        """(up, down, scale) with dW = scale * up @ down, or UserError naming `target`."""
        if self.low_rank is None:
            raise UserError(f"{target} cannot hold a {self.describe(config)} adapter: {self.why_not()}")
        return self.low_rank(parts, config, weight)

    def why_not(self) -> str:
        return self.cannot or (f"{self.name} declares no low-rank form of its update; write the merged "
                               f"model instead: rwkvft merge --format pth (or st for Ai00)")

    def adapter_off(self, model: nn.Module):
        """Context manager: the adapted `model` computes the base model's output inside it."""
        if self.switch_off is None:
            raise UserError(f"a {self.name} model has no adapter to switch off ({self.why_not()}); "
                            f"load the base model as the reference instead")
        return self.switch_off(model)


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


def peft_lora(low_rank: Callable[..., Any]):
    """`hf_peft` for methods with an exact low-rank form `low_rank`: an HF peft LORA adapter
    of the factors (LoraConfig has one r / alpha: every layer must agree)."""
    def export(groups: dict, config: dict, base_sd: dict):
        tensors, ranks = {}, set()
        for prefix, parts in groups.items():
            up, down, scale = low_rank(parts, config, base_sd[prefix + ".weight"])
            tensors[prefix] = {"lora_A.weight": down, "lora_B.weight": up}
            ranks.add((down.shape[0], scale * down.shape[0]))
        if len(ranks) != 1:
            raise UserError(f"the adapter's layers have different ranks / alphas {sorted(ranks)}; "
                            f"export the merged model with --format hf")
        (r, alpha), = ranks
        return tensors, {"peft_type": "LORA", "r": r, "lora_alpha": alpha,
                         "lora_dropout": float(config.get("dropout", 0.0)), "fan_in_fan_out": False,
                         "use_rslora": False, "use_dora": False, "init_lora_weights": True,
                         "rank_pattern": {}, "alpha_pattern": {}}
    return export


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
    label: Callable[[dict], str] | None = None
    low_rank: Callable[..., Any] | None = None
    low_rank_kind: str = "cannot"
    hf_peft: Callable[..., Any] | None = None
    alpha_key: str | None = None
    cannot: str = ""

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
                          apply_delta=self.apply_delta, summary=self.summary, label=self.label,
                          low_rank=self.low_rank, low_rank_kind=self.low_rank_kind,
                          hf_peft=self.hf_peft, alpha_key=self.alpha_key, reference=adapters_off,
                          switch_off=layers_in_reference_mode,
                          cannot=self.cannot)
