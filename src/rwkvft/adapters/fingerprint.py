"""A fingerprint of a base model, stored in adapter files: a merge, export or --adapter_init
refuses an adapter trained on another base (version, sizes, a checksum of never-adapted tensors)."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..errors import UserError
from ..models.schema import detect_version

# Tensors adapters never touch: a checksum over them identifies the base model.
_CHECKSUM_KEYS = ("emb.weight", "head.weight", "ln_out.weight", "blocks.0.ln1.weight")
_CHECKSUM_ELEMS = 4096


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
