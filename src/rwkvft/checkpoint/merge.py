"""Merge an adapter into its base state dict (and undo it where the maths allows).

Pure functions on state dicts. Merged weights are computed and returned in fp32; untouched
tensors are returned as they are. The writer rounds once (bf16 by default). The result has
exactly the base's keys and shapes: adapter tensors disappear, full tensors in the adapter
(trained ln / time / emb / head, or a whole model from `--peft none`) replace the base's.

The maths is each method's own `apply_delta` (rwkvft.adapters.registry), the same function
its layer's merged_weight() uses; this module only groups the file's tensors by layer, checks
they fit, and applies it. An adapter trained on selected layers (`layers` in its config) may
only hold tensors of those layers; every other layer is returned untouched (bit-identical).
"""
from __future__ import annotations

import torch

from ..adapters import registry
from ..errors import UserError
from ..models.schema import layer_of


def _split(adapter_sd: dict, method) -> tuple[dict[str, dict], dict]:
    """-> ({prefix: {suffix: tensor}}, {full key: tensor})."""
    groups: dict[str, dict] = {}
    full = {}
    known = registry.all_suffixes()
    for k, t in adapter_sd.items():
        prefix, _, local = k.rpartition(".")
        if local in known:
            if local not in method.suffixes:
                raise UserError(f"adapter tensor {k} does not belong to a {method.name} adapter; "
                                f"check adapter_config.json (method) next to the adapter file")
            groups.setdefault(prefix, {})[local] = t
        else:
            full[k] = t
    return groups, full


def _check_group(prefix: str, parts: dict, base_sd: dict, method, config: dict) -> None:
    key = prefix + ".weight"
    first = f"{prefix}.{sorted(parts)[0]}"
    if key not in base_sd or base_sd[key].dim() != 2:
        raise UserError(f"adapter tensor {first} needs a Linear weight {key}, which the base model "
                        f"does not have; pass the base the adapter was trained on")
    missing = [s for s in method.suffixes if s not in parts]
    if missing:
        raise UserError(f"adapter lacks {prefix}.{missing[0]} (needed for {method.name}); "
                        f"the adapter file is incomplete or from another method")
    layers = config.get("layers")
    if layers is not None and layer_of(key) not in layers:
        raise UserError(f"adapter tensor {first} is in layer {layer_of(key)}, but the adapter was "
                        f"trained on layers {layers} only (adapter_config.json); the file and its "
                        f"config do not belong together")
    out_f, in_f = base_sd[key].shape
    if not method.fits(parts, out_f, in_f, config):
        shapes = ", ".join(f"{s} {tuple(t.shape)}" for s, t in sorted(parts.items()))
        mode = f" {config['mode']}" if "mode" in config else ""
        raise UserError(f"adapter tensors for {prefix} ({shapes}) do not fit base weight {key} "
                        f"{(out_f, in_f)} for {method.name}{mode}; the adapter was trained on another base")


def _method(config: dict):
    name = config.get("method")
    try:
        return registry.get(name)
    except UserError:
        raise UserError(f"unknown adapter method {name!r} in adapter_config.json; "
                        f"expected one of {', '.join(registry.names())}") from None


def _apply(base_sd: dict, adapter_sd: dict, config: dict, sign: int) -> dict:
    method = _method(config)
    groups, full = _split(adapter_sd, method)
    if groups and method.apply_delta is None:
        raise UserError(f"{method.name} adapters hold no weight update to merge into the base; "
                        f"use them beside the base model instead")
    for k, t in full.items():
        if k not in base_sd or tuple(t.shape) != tuple(base_sd[k].shape):
            where = "is not in the base model" if k not in base_sd else \
                f"has shape {tuple(t.shape)} but the base has {tuple(base_sd[k].shape)}"
            raise UserError(f"adapter tensor {k} {where}; pass the base the adapter was trained on")
    for prefix, parts in sorted(groups.items()):
        _check_group(prefix, parts, base_sd, method, config)
    out = dict(base_sd)
    if sign > 0:
        out.update({k: t.float() for k, t in full.items()})
    for prefix, parts in groups.items():
        key = prefix + ".weight"
        out[key] = method.apply_delta(out[key].float(), {s: t.float() for s, t in parts.items()},
                                      config, sign)
    changed = [p + ".weight" for p in groups] + (list(full) if sign > 0 else [])
    for k in changed:
        if not torch.isfinite(out[k]).all() and not torch.isfinite(base_sd[k]).all():
            raise UserError(f"the base model's tensor {k} contains NaN or Inf; the base file is "
                            f"damaged: re-download or re-export it, nothing was written")
        if not torch.isfinite(out[k]).all():
            raise UserError(f"merged tensor {k} contains NaN or Inf; the adapter is broken "
                            f"(training diverged?): check its loss log, nothing was written")
    return out


def merge_state_dict(base_sd: dict, adapter_sd: dict, config: dict) -> dict:
    """Base + adapter -> merged state dict (base keys and shapes; merged weights in fp32).
    A state adapter adds its time_state tensors instead (checkpoint.state_export)."""
    config = _as_dict(config)
    if config.get("method") == "state":
        from .state_export import merge_state_adapter
        return merge_state_adapter(base_sd, adapter_sd, config, lambda b, a, c: _apply(b, a, c, +1))
    return _apply(base_sd, adapter_sd, config, +1)


def merge_adapter_file(base_sd: dict, adapter_path, lora_alpha: float | None = None):
    """Read an adapter (ours or RWKV-PEFT's), check it fits `base_sd`, return (merged, config)."""
    from .adapter_io import check_fingerprint, read_adapter
    from .alpha_flag import with_lora_alpha

    adapter_sd, config = read_adapter(adapter_path)
    config = with_lora_alpha(config, lora_alpha)  # one check of the flag for merge and export
    check_fingerprint(config.get("base"), base_sd)
    return merge_state_dict(base_sd, adapter_sd, config), config, adapter_sd


def unmerge_state_dict(merged_sd: dict, adapter_sd: dict, config: dict) -> dict:
    """Undo merge_state_dict for the adapted weights. Full tensors the adapter replaced
    (trained ln/time/...) keep their trained values: the originals are not in the adapter."""
    return _apply(merged_sd, adapter_sd, _as_dict(config), -1)


def _as_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


# ---------------------------------------------------------------- Ai00 / web-rwkv safetensors
# The conversion of Ai00's convert_safetensors.py (spec rwkv_arch.md §8.3): lower-case keys,
# renames, fp16, and the last two dims of the "x @ w" matrices transposed (substring test, as
# the script does it).
_AI00_RENAMES = (("time_faaaa", "time_first"), ("time_maa", "time_mix"),
                 ("lora_A", "lora.0"), ("lora_B", "lora.1"))
_AI00_TRANSPOSED = ("time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2", "w1", "w2",
                    "a1", "a2", "g1", "g2", "v1", "v2", "time_state", "lora.0")


def ai00_key(key: str, ndim: int) -> tuple[str, bool]:
    """(Ai00 name of an official key, whether its last two dims are transposed there)."""
    for old, new in _AI00_RENAMES:
        key = key.replace(old, new)
    key = key.lower()
    return key, ndim >= 2 and any(s in key for s in _AI00_TRANSPOSED)


def ai00_state_dict(sd: dict) -> dict:
    """Official state dict -> the tensors Ai00 loads from a .st file (fp16, contiguous, owned)."""
    out = {}
    for k, t in sd.items():
        k, transposed = ai00_key(k, t.dim())
        if transposed:
            t = t.transpose(-2, -1)
        t = t.detach().to("cpu", torch.float16).contiguous().clone()
        if not torch.isfinite(t).all():
            raise UserError(f"tensor {k} overflows fp16 (|x| > 65504), which Ai00 requires; "
                            f"write --format pth instead")
        out[k] = t
    return out
