"""RWKV models: the schema (`models.schema`), the modules (rwkv7, rwkv6) and their construction
(`models.build`: build_model, model_from_state_dict, to_module_shapes). Reading model files is
rwkvft.formats (a higher layer): `formats.load_model(path)`.

Importing this package loads only the schema; the module code comes on first use.
"""
from __future__ import annotations

import importlib

from .schema import ModelConfig

_BUILD = ("build_model", "model_from_state_dict", "to_module_shapes")


def __getattr__(name):
    # PEP 562: the construction functions come from models.build on first use (see above).
    if name in _BUILD:
        return getattr(importlib.import_module(".build", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ModelConfig", *_BUILD]
