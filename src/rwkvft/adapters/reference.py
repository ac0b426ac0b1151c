"""The reference policy of preference tuning, without a second copy of the weights where the
method allows it (spec preference_tuning.md §3).

A `Reference` names the module to run and a context inside which that module computes the
reference. Each method's record says how (`PeftMethod.reference(model, cfg) -> Reference`):
- Linear-wrapping methods (MiSS, LoRA): `adapters_off`, every AdaptedLinear computes its
  `reference_forward` (the frozen base) instead of base + adapter;
- PiSSA: the same switch, but its layer's `reference_forward` is the ORIGINAL weight
  W = W_res + B0 A0, not the residual base (adapters/pissa.py);
- state tuning: the trained states swapped for their starting values (adapters/state.py);
- full fine-tuning: a frozen copy of the starting model (adapters/full.py).
The context must be entered under torch.no_grad(): the reference is a constant.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .base import AdaptedLinear


@dataclass
class Reference:
    model: nn.Module
    active: Callable[[], contextlib.AbstractContextManager]
    # the reference computes the base model itself (False: a state prompted at init "base"), so
    # precomputed base log-probs (`train --ref_logps`) may stand in for it
    is_base: bool = True


@contextlib.contextmanager
def layers_in_reference_mode(model: nn.Module):
    """Every AdaptedLinear of `model` forwards through `reference_forward` inside the block."""
    layers = [m for m in model.modules() if isinstance(m, AdaptedLinear)]
    before = [m.reference_mode for m in layers]
    try:
        for m in layers:
            m.reference_mode = True
        yield
    finally:
        for m, b in zip(layers, before):
            m.reference_mode = b


def adapters_off(model: nn.Module, cfg=None) -> Reference:
    """The reference of a method that wraps Linears: the same model with its adapters bypassed."""
    return Reference(model, lambda: layers_in_reference_mode(model))
