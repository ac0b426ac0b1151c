"""Adapter files: the trained tensors (.pth or .safetensors) plus `adapter_config.json` beside it.

Our files hold only trainable tensors (and PiSSA's A0/B0), keyed by the base model's names
(`blocks.0.att.key.miss`). The JSON holds method, mode, r, alpha, dropout, mini_r, targets,
train_parts and a fingerprint of the base, so a merge can refuse the wrong base.

RWKV-PEFT files (no JSON, keys maybe prefixed "model.") are read too and normalised:
`.disha` / `.bone` -> `.miss` (2-D: default MiSS, 3-D: RWKV-PEFT's input-block bat = "bat_in");
`.lora_A` / `.lora_B` -> LoRA whose alpha must come from the user (--lora_alpha).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..foreign_json import adapter_config
from ..models.schema import detect_version
from ..utils import atomic_path
from .rwkv_format import SAFETENSORS_SUFFIXES, read_state_dict

CONFIG_NAME = "adapter_config.json"
FORMAT_TAG = "rwkvft-adapter"
_PTH_SUFFIXES = (".pth", ".pt")
_WRAPPER_PREFIXES = ("model.", "_forward_module.", "module.")
_FOREIGN_MISS = (".disha", ".bone")
# Tensors adapters never touch: a checksum over them identifies the base model.
_CHECKSUM_KEYS = ("emb.weight", "head.weight", "ln_out.weight", "blocks.0.ln1.weight")
_CHECKSUM_ELEMS = 4096


# ---------------------------------------------------------------- fingerprint
def _version(sd) -> str:
    """The base's version label, '' where schema cannot tell (a fingerprint never refuses)."""
    try:
        return detect_version(sd)
    except UserError:
        return ""


def _checksum(sd) -> str:
    keys = [k for k in _CHECKSUM_KEYS if k in sd] or sorted(sd)[:3]
    h = hashlib.sha256()
    for k in keys:
        # Round through bf16 so an fp32 copy of a bf16 file has the same checksum.
        t = sd[k].detach().reshape(-1)[:_CHECKSUM_ELEMS].to("cpu", torch.bfloat16).float()
        h.update(k.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(sd_or_model) -> dict:
    """version, n_layer, n_embd, vocab_size and a checksum of a few never-adapted tensors.

    Call it on the base (before inject) so PiSSA's residual split cannot change it.
    """
    sd = sd_or_model.state_dict() if isinstance(sd_or_model, nn.Module) else sd_or_model
    layers = [int(k.split(".")[1]) for k in sd if k.startswith("blocks.") and k.split(".")[1].isdigit()]
    emb = sd.get("emb.weight")
    return {"version": _version(sd), "n_layer": 1 + max(layers) if layers else 0,
            "n_embd": int(emb.shape[1]) if emb is not None else 0,
            "vocab_size": int(emb.shape[0]) if emb is not None else 0,
            "checksum": _checksum(sd)}


def check_fingerprint(stored: dict | None, base_sd) -> None:
    """UserError when the base does not look like the one the adapter was trained on."""
    if not stored:
        return  # foreign files carry no fingerprint; key/shape checks still apply
    now = fingerprint(base_sd)
    for field in ("version", "n_layer", "n_embd", "vocab_size", "checksum"):
        if field in stored and stored[field] != now[field]:
            raise UserError(f"the adapter was trained on a different base model ({field} "
                            f"{stored[field]!r} there, {now[field]!r} here); pass the base it was trained on")


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
def _strip_prefixes(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        for p in _WRAPPER_PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = v
    return out


def _foreign_config(sd: dict, path: Path) -> tuple[dict, dict]:
    """Config for a file without adapter_config.json (RWKV-PEFT), with keys normalised."""
    miss = {k: v for k, v in sd.items() if k.endswith(_FOREIGN_MISS + (".miss",))}
    lora = [k for k in sd if k.endswith((".lora_A", ".lora_B"))]
    if miss and lora:
        raise UserError(f"{path} mixes MiSS and LoRA tensors; merge one adapter at a time")
    if lora:
        return sd, {"method": "lora", "alpha": None, "source": "rwkv-peft"}
    if not miss:
        state = any(k.endswith(".att.time_state") for k in sd)  # RWKV-PEFT --peft state
        return sd, {"method": "state" if state else "none", "source": "rwkv-peft"}
    dims = {v.dim() for v in miss.values()}
    if len(dims) != 1 or dims - {2, 3}:
        raise UserError(f"{path}: MiSS/DiSHA tensors must all be 2-D (bone) or all 3-D (bat); "
                        f"found {sorted(dims)}-D")
    ndim = dims.pop()
    if ndim == 3 and any(k.endswith(".miss") for k in miss):
        raise UserError(f"{path}: 3-D .miss tensors need adapter_config.json beside them to tell "
                        f"HF-style bat from RWKV-PEFT bat; restore it")
    renamed = {(k.rsplit(".", 1)[0] + ".miss" if k in miss else k): v for k, v in sd.items()}
    return renamed, {"method": "miss", "mode": "default" if ndim == 2 else "bat_in",
                     "source": "rwkv-peft"}


def read_adapter(path) -> tuple[dict, dict]:
    """(tensors, config dict). Reads our files and RWKV-PEFT's (see module docstring), and
    HF peft adapter folders (MISS / LORA; RWKV-PEFT's `--merge 0` folders too)."""
    path = Path(path)
    if path.is_dir():
        from .hf_peft import read_hf_peft
        return read_hf_peft(path)
    sd = _strip_prefixes(read_state_dict(path))
    if not sd:
        raise UserError(f"adapter file {path} holds no tensors; point --adapter at a saved rwkv-N.pth")
    cfg_path = path.parent / CONFIG_NAME
    if not cfg_path.exists():
        return _foreign_config(sd, path)
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path} is not valid JSON ({e}); restore it from the training run") from None
    if not isinstance(config, dict) or "method" not in config:
        raise UserError(f"{cfg_path} has no 'method' field; it is not an rwkvft adapter config")
    config = adapter_config(config, cfg_path)  # each field of the type rwkvft wrote
    _check_saved_with(path, config, cfg_path)
    return sd, config
