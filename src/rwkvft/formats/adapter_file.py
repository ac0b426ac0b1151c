"""Adapter files: the trained tensors (.pth or .safetensors) plus `adapter_config.json` beside it.

Our files hold only trainable tensors (and PiSSA's A0/B0), keyed by the base model's names
(`blocks.0.att.key.miss`). The JSON holds method, mode, r, alpha, dropout, mini_r, targets,
train_parts and a fingerprint of the base, so a merge can refuse the wrong base.

RWKV-PEFT's files (no JSON) are formats/rwkv_peft.py; the base fingerprint is
rwkvft.adapters.fingerprint.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import UserError
from ..foreign_json import adapter_config
from ..utils import atomic_path
from .common import SAFETENSORS_SUFFIXES, load_pth, load_safetensors, read_json
from .registry import Format, register
from .rwkv_peft import strip_prefixes

CONFIG_NAME = "adapter_config.json"
FORMAT_TAG = "rwkvft-adapter"
_PTH_SUFFIXES = (".pth", ".pt")


# ---------------------------------------------------------------- save
def save_adapter(path, sd: dict, cfg, fingerprint: dict | None = None) -> Path:
    """Write the adapter tensors (.pth, or .safetensors/.st) and adapter_config.json beside them."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _PTH_SUFFIXES + SAFETENSORS_SUFFIXES:
        raise UserError(f"adapter file {path} must end in .pth or .safetensors")
    config = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
    config.update(format=FORMAT_TAG, base=fingerprint or {})
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    with atomic_path(path) as tmp:
        if suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import save_file
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(tensors, tmp)
        digest = _sha256(tmp)
    # The JSON names every tensor file saved with it (by content), so a file of another run
    # (another alpha, r or mode) can never be merged with this config.
    config["files"] = {**_files_saved_with(path.parent / CONFIG_NAME, config), path.name: digest}
    with atomic_path(path.parent / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files_saved_with(cfg_path: Path, config: dict) -> dict:
    """The files recorded in an existing adapter_config.json of the same config (earlier
    saves of this run) that still exist; {} for another run's config."""
    try:
        old = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(old, dict) or not isinstance(old.get("files"), dict):
        return {}
    if {k: v for k, v in old.items() if k != "files"} != {k: v for k, v in config.items() if k != "files"}:
        return {}
    return {n: d for n, d in old["files"].items() if (cfg_path.parent / n).exists()}


def _check_saved_with(path: Path, config: dict, cfg_path: Path) -> None:
    files = config.get("files")
    if not isinstance(files, dict):
        return  # written before files were recorded: shapes are still checked at merge
    if _sha256(path) not in files.values():
        raise UserError(f"{path.name} was not saved with the {CONFIG_NAME} beside it (it is from "
                        f"another run, or was changed), so its method, r and alpha are unknown; "
                        f"merge it from the folder of the run that wrote it")


# ---------------------------------------------------------------- read
def has_config(path: Path) -> bool:
    return path.is_file() and (path.parent / CONFIG_NAME).exists()


def read_adapter_file(path) -> tuple[dict, dict]:
    """(tensors, config dict) of one of our adapter files (adapter_config.json beside it)."""
    path = Path(path)
    sd = strip_prefixes(read_model_file(path))
    if not sd:
        raise UserError(f"adapter file {path} holds no tensors; point --adapter at a saved rwkv-N.pth")
    cfg_path = path.parent / CONFIG_NAME
    config = read_json(cfg_path, "an rwkvft adapter")
    if "method" not in config:
        raise UserError(f"{cfg_path} has no 'method' field; it is not an rwkvft adapter config")
    config = adapter_config(config, cfg_path)  # each field of the type rwkvft wrote
    _check_saved_with(path, config, cfg_path)
    return sd, config


def read_model_file(path: Path) -> dict:
    """The raw tensors of a .pth / .safetensors / .st file (no renames)."""
    return load_safetensors(path) if path.suffix.lower() in SAFETENSORS_SUFFIXES else load_pth(path)


FORMAT = register(Format(
    name="rwkvft-adapter", kind="adapter",
    what="rwkvft adapter (rwkv-N.pth / .safetensors + adapter_config.json beside it)",
    recognise=has_config, read=read_adapter_file))
