"""RWKV models: the schema (`models.schema`), the modules (rwkv7, rwkv6) and their construction
(`models.build`: build_model, load_model, model_from_state_dict, to_module_shapes).

Importing this package loads only the schema, so `rwkvft.checkpoint` (file I/O), which needs
the schema, does not pull in the model code; `models.build` reads files through it.
"""
from __future__ import annotations

import importlib

from .schema import ModelConfig

_BUILD = ("build_model", "load_model", "model_from_state_dict", "to_module_shapes")


def __getattr__(name):
    # PEP 562: the construction functions come from models.build on first use (see above).
    if name in _BUILD:
        return getattr(importlib.import_module(".build", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ModelConfig", *_BUILD]
