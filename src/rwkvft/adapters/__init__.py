"""Parameter-efficient adapters for RWKV: a registry of methods (miss, lora, pissa, none).

Public API (see docs/internals.md):
    parse_peft(method, peft_config) -> AdapterConfig
    inject(model, cfg, train_parts) -> Injected (sorted trainable names; .config, .method)
    adapter_state_dict(model, names), load_adapter_state(model, sd)
    format_trainable(model, names) -> str (per-kind counts for the log)
    registry: register(PeftMethod), get(name), names()     (adapters/method.py: the record)
    save_adapter / read_adapter / fingerprint / check_fingerprint   (rwkvft.checkpoint.adapter_io)
    merge_state_dict / unmerge_state_dict                          (rwkvft.checkpoint.merge)
"""
from __future__ import annotations

from . import registry
from .base import AdaptedLinear
from .config import AdapterConfig
from .inject import (Injected, adapter_state_dict, format_trainable, inject, load_adapter_state,
                     trainable_summary)
from .lora import LoraLinear
from .method import LinearMethod, PeftMethod
from .miss import MissLinear
from .pissa import PissaLinear
from .registry import parse_peft, register

_LAZY = {
    "save_adapter": "rwkvft.checkpoint.adapter_io",
    "read_adapter": "rwkvft.checkpoint.adapter_io",
    "fingerprint": "rwkvft.checkpoint.adapter_io",
    "check_fingerprint": "rwkvft.checkpoint.adapter_io",
    "merge_state_dict": "rwkvft.checkpoint.merge",
    "unmerge_state_dict": "rwkvft.checkpoint.merge",
}


def __getattr__(name):
    # The file/merge helpers live in rwkvft.checkpoint; import them on first use so that
    # importing the adapters never pulls in the checkpoint package (and no import cycle forms).
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = ["AdaptedLinear", "AdapterConfig", "Injected", "LinearMethod", "LoraLinear",
           "MissLinear", "PeftMethod", "PissaLinear", "adapter_state_dict", "format_trainable",
           "inject", "load_adapter_state", "parse_peft", "register", "registry",
           "trainable_summary", *_LAZY]
