"""Injection by name, the one resolved trainable set, and adapter state in/out of a model.

`inject` wraps the target Linears, freezes everything, then unfreezes exactly the adapter
tensors plus the requested `train_parts`. The sorted list it returns drives requires_grad,
the optimizer and saving, so the three can never disagree.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import UserError
from .base import AdaptedLinear
from .config import TRAIN_PARTS, AdapterConfig
from .lora import LoraLinear
from .miss import MissLinear, check_sizes
from .pissa import PissaLinear

V7_TARGETS = ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")
V6_TARGETS = ("att.receptance", "att.key", "att.value", "att.gate", "att.output",
              "ffn.key", "ffn.receptance", "ffn.value")
DEFAULT_TARGETS = {"x070": V7_TARGETS, "x060": V6_TARGETS, "x052": V6_TARGETS}

_LN = re.compile(r"(^|\.)(ln0|ln1|ln2|ln_x|ln_out)\.(weight|bias)$")
_V7_TIME = re.compile(r"(^|\.)(att\.(x_[rwkvag]|w0|a0|v0|k_k|k_a|r_k|[wavg][12])|ffn\.x_k)$")
_V6_TIME = re.compile(r"(^|\.)time_(?!state$)[A-Za-z0-9_]+$")  # time_state: --peft state
# Some x070 files carry layer-0 att.v0/v1/v2, which the model never uses (layer 0 makes
# v_first). Training them would only give DDP unused parameters and the optimizer dead state.
_V7_UNUSED = re.compile(r"(^|\.)blocks\.0\.att\.v[012]$")
_PART_MATCH = {
    "ln": lambda n: bool(_LN.search(n)),
    "time": lambda n: bool((_V7_TIME.search(n) and not _V7_UNUSED.search(n)) or _V6_TIME.search(n)),
    "emb": lambda n: n.startswith("emb."),
    "head": lambda n: n.startswith("head."),
}


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _short(name: str) -> str:
    """'blocks.3.att.key' -> 'att.key' (the name users write in target_modules)."""
    return ".".join(name.split(".")[-2:])


def resolve_targets(model: nn.Module, cfg: AdapterConfig) -> list[str]:
    """Full module names of the Linears to wrap."""
    # The head is never adapted: the trainer reads head.weight directly (chunked loss);
    # train it fully with train_parts ["head"] instead.
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "head"]
    valid = sorted({_short(n) for n in linears})
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
    return found


def _wrap(linear: nn.Linear, name: str, cfg: AdapterConfig) -> AdaptedLinear:
    if cfg.method == "miss":
        check_sizes(name, cfg.mode, cfg.r, linear.out_features, linear.in_features, cfg.mini_r)
        return MissLinear(linear, cfg.r, cfg.mode, cfg.mini_r, cfg.dropout)
    if cfg.method == "lora":
        return LoraLinear(linear, cfg.r, cfg.scale, cfg.dropout)
    return PissaLinear(linear, cfg.r, cfg.dropout, cfg.svd_niter, name=name)


def _set_child(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _check_parts(train_parts) -> list[str]:
    parts = list(train_parts or [])
    for p in parts:
        if p not in TRAIN_PARTS:
            raise UserError(f"unknown train part {p!r}; use any of {', '.join(TRAIN_PARTS)} (or none)")
    return sorted(set(parts))


def inject(model: nn.Module, cfg: AdapterConfig, train_parts=None) -> list[str]:
    """Wrap the target Linears, set requires_grad; return the sorted trainable names.

    `cfg.targets` and `cfg.train_parts` are filled in (in place) with what was resolved, and
    `cfg` is kept as `model.adapter_config`, for save_adapter.
    """
    if cfg.method == "state":  # wraps no Linear (adapters/state.py)
        from .state import inject_state
        return inject_state(model, cfg, train_parts)
    parts = _check_parts(train_parts)
    if any(isinstance(m, AdaptedLinear) for m in model.modules()):
        raise UserError("this model already has adapters; load a fresh base model before injecting again")
    names = resolve_targets(model, cfg)
    for name in names:
        _set_child(model, name, _wrap(model.get_submodule(name), name, cfg))
    trainable = set()
    for pname, p in model.named_parameters():
        local = pname.rpartition(".")[2]
        mod = model.get_submodule(pname.rpartition(".")[0]) if "." in pname else model
        is_adapter = isinstance(mod, AdaptedLinear) and local in mod.adapter_param_names
        if is_adapter or any(_PART_MATCH[part](pname) for part in parts):
            trainable.add(pname)
        p.requires_grad_(pname in trainable)
    for part in parts:
        if not any(_PART_MATCH[part](n) for n in trainable):
            raise UserError(f"train part {part!r} matches no parameter of this model; drop it from train_parts")
    # Record what was resolved on the config itself (save_adapter writes it to
    # adapter_config.json) and on the model, so either can be passed to save_adapter.
    cfg.targets, cfg.train_parts = sorted({_short(n) for n in names}), parts
    model.adapter_config = cfg
    return sorted(trainable)


def param_kind(name: str) -> str:
    """Which group a trainable name belongs to (for the log)."""
    local = name.rpartition(".")[2]
    if local == "time_state":
        return "state"
    if local in ("miss", "lora_A", "lora_B", "lora_A0", "lora_B0"):
        return "miss" if local == "miss" else "lora"
    for part, match in _PART_MATCH.items():
        if match(name):
            return part
    return "other"


def trainable_summary(model: nn.Module, names: list[str]) -> dict[str, tuple[int, int]]:
    """kind -> (number of tensors, number of parameters)."""
    params = dict(model.named_parameters())
    out: dict[str, tuple[int, int]] = {}
    for n in names:
        k = param_kind(n)
        t, c = out.get(k, (0, 0))
        out[k] = (t + 1, c + params[n].numel())
    return out


def format_trainable(model: nn.Module, names: list[str], list_names: bool = False) -> str:
    """Human lines for train_log.txt: per-kind tensor and parameter counts, then the total;
    with list_names, every trainable tensor with its shape first."""
    summary = trainable_summary(model, names)
    total = sum(p.numel() for p in model.parameters())
    params = dict(model.named_parameters())
    lines = [f"    {n} {tuple(params[n].shape)}" for n in names] if list_names else []
    lines += [f"  {k:<6} {t:>5} tensors {c:>14,} params" for k, (t, c) in sorted(summary.items())]
    n_train = sum(c for _, c in summary.values())
    lines.append(f"  total  {len(names):>5} tensors {n_train:>14,} params "
                 f"({100.0 * n_train / max(total, 1):.3f}% of {total:,})")
    return "trainable parameters:\n" + "\n".join(lines)


def _adapter_modules(model: nn.Module) -> dict[str, AdaptedLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AdaptedLinear)}


def adapter_state_dict(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The trainable tensors (plus PiSSA's A0/B0), keyed by the model's names, detached CPU copies."""
    params = dict(model.named_parameters())
    sd = {n: params[n].detach().cpu().clone() for n in names}
    for prefix, mod in _adapter_modules(model).items():
        for local in mod.adapter_extra_names:
            sd[f"{prefix}.{local}"] = getattr(mod, local).detach().cpu().clone()
    return sd


def _expected_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every key an adapter file for this model must hold, with the model's tensor."""
    out = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for prefix, mod in _adapter_modules(model).items():
        out.update({f"{prefix}.{k}": v for k, v in mod.adapter_tensors().items()})
    return out


def load_adapter_state(model: nn.Module, sd: dict[str, torch.Tensor]) -> list[str]:
    """Load an adapter file into an injected model; every key and shape is checked first."""
    expected = _expected_tensors(model)
    for k in sorted(sd):
        if k not in expected:
            raise UserError(f"adapter tensor {k} has no place in this model (method, targets or "
                            f"train_parts differ from the run that saved it); inject with the same settings")
        if tuple(sd[k].shape) != tuple(expected[k].shape):
            raise UserError(f"adapter tensor {k} has shape {tuple(sd[k].shape)} but the model expects "
                            f"{tuple(expected[k].shape)}; the adapter was made for a different base or r")
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise UserError(f"adapter file lacks {missing[0]} ({len(missing)} missing); it was saved with "
                        f"other targets or train_parts than this model was injected with")
    mods = _adapter_modules(model)
    with torch.no_grad():
        for prefix, mod in mods.items():
            mod.load_adapter_tensors({k: sd[f"{prefix}.{k}"] for k in mod.adapter_tensors()})
        params = dict(model.named_parameters())
        for k, t in sd.items():
            if k in params and k.rpartition(".")[0] not in mods:
                params[k].copy_(t)
    return sorted(sd)
