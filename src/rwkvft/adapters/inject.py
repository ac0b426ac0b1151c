"""Injection by name, the one resolved trainable set, and adapter state in/out of a model.

`inject` lets the method (adapters/registry.py) add its tensors, freezes everything, then
unfreezes exactly the method's tensors plus the requested `train_parts`. The sorted list it
returns drives requires_grad, the optimizer and saving, so the three can never disagree.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from ..models.schema import PARAM_GROUPS, in_group, param_group
from . import registry
from .base import AdaptedLinear
from .config import AdapterConfig
from .method import V6_TARGETS, V7_TARGETS, resolve_targets  # noqa: F401  (public names)


class Injected(list):
    """What inject() did: the sorted trainable names (a list, as before), plus `config` (the
    resolved AdapterConfig: targets, train_parts) and `method` (the PeftMethod record)."""

    def __init__(self, names, config: AdapterConfig, method):
        super().__init__(names)
        self.config, self.method = config, method


def _check_parts(train_parts) -> list[str]:
    parts = list(train_parts or [])
    for p in parts:
        if p not in PARAM_GROUPS:
            raise UserError(f"unknown train part {p!r}; use any of {', '.join(PARAM_GROUPS)} (or none)")
    return sorted(set(parts))


def inject(model: nn.Module, cfg: AdapterConfig, train_parts=None) -> Injected:
    """Add the method's tensors (cfg.method, from the registry), freeze everything else but the
    train_parts; return the sorted trainable names (an `Injected` list).

    `cfg.targets` and `cfg.train_parts` are filled in (in place) with what was resolved; the
    same cfg is `result.config`, for save_adapter.
    """
    parts = _check_parts(train_parts)
    if any(isinstance(m, AdaptedLinear) for m in model.modules()):
        raise UserError("this model already has adapters; load a fresh base model before injecting again")
    method = registry.get(cfg.method)
    added = set(method.inject(model, cfg))
    trainable = set()
    for pname, p in model.named_parameters():
        if pname in added or any(in_group(pname, part) for part in parts):
            trainable.add(pname)
        p.requires_grad_(pname in trainable)
    for part in parts:
        if not any(in_group(n, part) for n in trainable):
            raise UserError(f"train part {part!r} matches no parameter of this model; drop it from train_parts")
    cfg.train_parts = parts
    return Injected(sorted(trainable), cfg, method)


def param_kind(name: str) -> str:
    """Which group a trainable name belongs to (for the log)."""
    local = name.rpartition(".")[2]
    method = next((m for m in registry.methods() if local in m.suffixes), None)
    return method.name if method else param_group(name) or "other"


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
