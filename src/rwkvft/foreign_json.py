"""The JSON files rwkvft reads but did not necessarily write, field by field.

One table per file says which fields are read and of which JSON type (jsonfields.KINDS); the
readers in checkpoint/ and cli/ call the functions here, so a field of the wrong type is one
`rwkvft: error:` line naming the file and the field. tests/reliability/test_json_scan.py feeds
every field of every table each wrong JSON type through the real readers.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .errors import UserError
from .jsonfields import as_object, field, read_object

# (kind, check, what the check wants)
_POSITIVE = (lambda x: x > 0, "a whole number > 0")
_DROPOUT = (lambda x: 0 <= x < 1, "a number from 0 to below 1")

# rwkvft_state.json inside a Runner state .pth (checkpoint/state_export.py writes it)
STATE_META = {"version": ("str", None, ""), "n_layer": ("int", *_POSITIVE),
              "n_embd": ("int", *_POSITIVE), "head_size": ("int", *_POSITIVE)}

# HF peft adapter_config.json (peft's MissConfig / LoraConfig): the fields checkpoint/hf_peft reads
HF_PEFT = {"peft_type": ("str", None, ""), "r": ("int", *_POSITIVE), "mini_r": ("int", *_POSITIVE),
           "lora_alpha": ("number", None, ""), "lora_dropout": ("number", *_DROPOUT),
           "miss_dropout": ("number", *_DROPOUT), "init_weights": ("bool_or_str", None, ""),
           "bias": ("str", None, "")}

# HF model config.json and the safetensors index beside it (checkpoint/hf_export reads them)
HF_CONFIG = {"model_type": ("str", None, "")}
HF_INDEX = {"weight_map": ("object", None, "")}

# an rwkvft adapter_config.json (checkpoint/adapter_io writes it; a user may edit or damage it):
# None-able fields take null, and "base" is the base model's fingerprint
_NON_NEGATIVE = (lambda x: x >= 0, "a whole number >= 0")
ADAPTER = {"method": ("str", None, ""), "mode": ("str", None, ""), "r": ("int", *_NON_NEGATIVE),
           "alpha": ("number", None, ""), "dropout": ("number", *_DROPOUT),
           "mini_r": ("int", *_NON_NEGATIVE), "targets": ("str_list", None, ""),
           "train_parts": ("str_list", None, ""), "target_modules": ("str_list", None, ""),
           "layers": ("int_list", None, ""), "base": ("object", None, ""),
           "files": ("object", None, ""), "init": ("str", None, ""),
           "prompt_tokens": ("int_list", None, "")}  # a state adapter's init "base" prompt
ADAPTER_NULLABLE = {"alpha", "target_modules", "layers", "base", "prompt_tokens"}
FINGERPRINT = {"checksum": ("str", None, ""), "version": ("str", None, ""),
               "n_layer": ("int", *_POSITIVE), "n_embd": ("int", *_POSITIVE),
               "vocab_size": ("int", *_POSITIVE)}

# train_config.json: every field has the JSON type of its TrainConfig annotation
_ANNOTATION_KINDS = {"int": "int", "float": "number", "str": "str", "bool": "bool", "list": "str_list"}


def _typed(obj: dict, table: dict, source: str, nullable=()) -> dict:
    out = dict(obj)
    for name, (kind, check, must) in table.items():
        if name in obj:
            out[name] = field(obj, name, kind, source, check=check, must=must,
                              nullable=name in nullable)
    return out


def adapter_config(config, path: Path) -> dict:
    """An rwkvft adapter_config.json object, with every field it may hold typed."""
    source = str(path)
    fix = "restore it from the training run"
    typed = _typed(as_object(config, source, fix), ADAPTER, source, ADAPTER_NULLABLE)
    if typed.get("base"):
        typed["base"] = _typed(typed["base"], FINGERPRINT, f"{source} (base)")
    return typed


def state_meta(raw, path) -> dict:
    """The model facts recorded in a Runner state file (absent fields stay absent)."""
    source = f"state file {path} ({'rwkvft_state.json'})"
    obj = as_object(raw, source, "re-export the state with rwkvft export --format runner-state")
    return {k: v for k, v in _typed(obj, STATE_META, source).items() if k in STATE_META}


def hf_peft_config(folder: Path) -> dict:
    """adapter_config.json of an HF peft adapter folder, with the read fields typed."""
    path = folder / "adapter_config.json"
    if not path.exists():
        if (folder / "config.json").exists():
            raise UserError(f"{folder} is an HF model folder (config.json, no adapter_config.json), "
                            f"not an adapter; give an adapter file (rwkv-N.pth) or an HF peft "
                            f"adapter folder")
        raise UserError(f"{folder} has no adapter_config.json, so it is no HF peft adapter folder; "
                        f"give an adapter file (rwkv-N.pth) or an HF peft adapter folder")
    cfg = read_object(path, "an HF peft adapter folder", "restore the adapter folder")
    if "peft_type" not in cfg:
        raise UserError(f"{path} has no peft_type; it is not an HF peft adapter folder")
    return _typed(cfg, HF_PEFT, str(path))


def hf_model_type(cfg_path: Path):
    """model_type of an HF model config.json."""
    cfg = read_object(cfg_path, "an HF model folder", "re-export the folder")
    return _typed(cfg, HF_CONFIG, str(cfg_path)).get("model_type")


def hf_weight_files(index_path: Path) -> list[str]:
    """The shard names a model.safetensors.index.json maps to."""
    idx = _typed(read_object(index_path, "a sharded HF model folder", "re-export the folder"),
                 HF_INDEX, str(index_path))
    names = list(idx.get("weight_map", {}).values())
    if not names or not all(isinstance(n, str) and n and "/" not in n for n in names):
        raise UserError(f"{index_path}: 'weight_map' must map tensor names to shard file names "
                        f"in the folder; re-export the folder")
    return sorted(set(names))


def train_config_settings(path: Path, keys) -> dict:
    """The `keys` of a run's train_config.json, each of its TrainConfig type."""
    saved = read_object(path, "the run's settings", "pass the settings as flags instead")
    return typed_train_config(saved, str(path), keys)


def typed_train_config(saved: dict, source: str, keys) -> dict:
    """The `keys` present in the train_config.json object `saved`, each of its TrainConfig type."""
    from .config import TrainConfig
    kinds = {f.name: _ANNOTATION_KINDS.get(str(f.type), "str") for f in dataclasses.fields(TrainConfig)}
    return {k: field(saved, k, kinds[k], source) for k in keys if k in saved}
