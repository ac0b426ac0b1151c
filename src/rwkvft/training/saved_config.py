"""A run's train_config.json read back (eval's data settings, --resume's comparison): every field
has the JSON type of its TrainConfig annotation, so a damaged or hand-edited field is one
`rwkvft: error:` line naming the file and the field. The other foreign JSON files are
rwkvft/foreign_json.py; this one lives here because it needs TrainConfig (a higher layer).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import TrainConfig
from ..jsonfields import field, read_object

_ANNOTATION_KINDS = {"int": "int", "float": "number", "str": "str", "bool": "bool", "list": "str_list"}


def train_config_settings(path: Path, keys) -> dict:
    """The `keys` of a run's train_config.json, each of its TrainConfig type."""
    saved = read_object(path, "the run's settings", "pass the settings as flags instead")
    return typed_train_config(saved, str(path), keys)


def typed_train_config(saved: dict, source: str, keys) -> dict:
    """The `keys` present in the train_config.json object `saved`, each of its TrainConfig type."""
    kinds = {f.name: _ANNOTATION_KINDS.get(str(f.type), "str") for f in dataclasses.fields(TrainConfig)}
    return {k: field(saved, k, kinds[k], source) for k in keys if k in saved}
