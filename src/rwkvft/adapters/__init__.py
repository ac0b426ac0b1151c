"""Parameter-efficient adapters for RWKV: a registry of methods (miss, lora, pissa, none).

Public API (see docs/internals.md):
    parse_peft(method, peft_config) -> AdapterConfig
    inject(model, cfg, train_parts) -> Injected (sorted trainable names; .config, .method)
    adapter_state_dict(model, names), load_adapter_state(model, sd)
    format_trainable(model, names) -> str (per-kind counts for the log)
    registry: register(PeftMethod), get(name), names()     (adapters/method.py: the record)
    fingerprint / check_fingerprint (adapters.fingerprint), merge_state_dict /
    unmerge_state_dict (adapters.merge); adapter FILES are rwkvft.formats
"""
from __future__ import annotations

from . import registry
from .base import AdaptedLinear
from .config import AdapterConfig
from .fingerprint import check_fingerprint, fingerprint
from .inject import (Injected, adapter_state_dict, format_trainable, inject, load_adapter_state,
                     trainable_summary)
from .lora import LoraLinear
from .merge import merge_state_dict, unmerge_state_dict
from .method import LinearMethod, PeftMethod
from .miss import MissLinear
from .pissa import PissaLinear
from .registry import parse_peft, register

__all__ = ["AdaptedLinear", "AdapterConfig", "Injected", "LinearMethod", "LoraLinear",
           "MissLinear", "PeftMethod", "PissaLinear", "adapter_state_dict", "format_trainable",
           "inject", "load_adapter_state", "parse_peft", "register", "registry",
           "trainable_summary", "fingerprint", "check_fingerprint", "merge_state_dict",
           "unmerge_state_dict"]
