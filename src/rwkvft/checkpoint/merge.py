"""Merge an adapter into its base state dict (and undo it where the maths allows).

Pure functions on state dicts. Merged weights are computed and returned in fp32; untouched
tensors are returned as they are. The writer rounds once (bf16 by default). The result has
exactly the base's keys and shapes: adapter tensors disappear, full tensors in the adapter
(trained ln / time / emb / head) replace the base's.

Formulas (W fp32, shapes (out, in)):
  miss default/mini  W + tile(D^T)                 unmerge: subtract
  miss bat/bat_in    W + blockwise(W_ij T + T)     unmerge: (W' - T)(I + T)^-1 per block
  lora               W + alpha/r * B A             unmerge: subtract
  pissa              W - B0 A0 + B A               unmerge: W' - B A + B0 A0
"""
from __future__ import annotations

import torch

from ..adapters.lora import lora_delta
from ..adapters.miss import merge_weight
from ..errors import UserError

_SUFFIXES = {"miss": ("miss",), "lora": ("lora_A", "lora_B"),
             "pissa": ("lora_A", "lora_B", "lora_A0", "lora_B0"), "none": ()}
_ALL_ADAPTER = {"miss", "lora_A", "lora_B", "lora_A0", "lora_B0", "disha", "bone"}


def _split(adapter_sd: dict, method: str) -> tuple[dict[str, dict], dict]:
    """-> ({prefix: {suffix: tensor}}, {full key: tensor})."""
    groups: dict[str, dict] = {}
    full = {}
    for k, t in adapter_sd.items():
        prefix, _, local = k.rpartition(".")
        if local in _ALL_ADAPTER:
            if local not in _SUFFIXES[method]:
                raise UserError(f"adapter tensor {k} does not belong to a {method} adapter; "
                                f"check adapter_config.json (method) next to the adapter file")
            groups.setdefault(prefix, {})[local] = t
        else:
            full[k] = t
    return groups, full


def _fits(method: str, mode: str, parts: dict, out_f: int, in_f: int) -> bool:
    if method == "miss":
        t = parts["miss"]
        if mode in ("default", "mini"):
            ok_cols = t.shape[1] == out_f if mode == "default" else out_f % t.shape[1] == 0
            return t.dim() == 2 and ok_cols and t.shape[0] <= in_f
        r = t.shape[-1]
        blocks = out_f // r if mode == "bat" else in_f // r
        return t.dim() == 3 and not (in_f % r or out_f % r) and tuple(t.shape) == (blocks, r, r)
    a, b = parts["lora_A"], parts["lora_B"]
    ok = a.dim() == 2 and b.dim() == 2 and a.shape[1] == in_f and b.shape == (out_f, a.shape[0])
    if method == "pissa":
        ok = ok and parts["lora_A0"].shape == a.shape and parts["lora_B0"].shape == b.shape
    return ok


def _check_group(prefix: str, parts: dict, base_sd: dict, method: str, mode: str) -> None:
    key = prefix + ".weight"
    first = f"{prefix}.{sorted(parts)[0]}"
    if key not in base_sd or base_sd[key].dim() != 2:
        raise UserError(f"adapter tensor {first} needs a Linear weight {key}, which the base model "
                        f"does not have; pass the base the adapter was trained on")
    missing = [s for s in _SUFFIXES[method] if s not in parts]
    if missing:
        raise UserError(f"adapter lacks {prefix}.{missing[0]} (needed for {method}); "
                        f"the adapter file is incomplete or from another method")
    out_f, in_f = base_sd[key].shape
    if not _fits(method, mode, parts, out_f, in_f):
        shapes = ", ".join(f"{s} {tuple(t.shape)}" for s, t in sorted(parts.items()))
        raise UserError(f"adapter tensors for {prefix} ({shapes}) do not fit base weight {key} "
                        f"{(out_f, in_f)} for {method} {mode}; the adapter was trained on another base")


def _new_weight(w: torch.Tensor, parts: dict, config: dict, sign: int) -> torch.Tensor:
    method = config["method"]
    p = {k: v.float() for k, v in parts.items()}
    if method == "miss":
        return merge_weight(w, p["miss"], config.get("mode", "default"), sign)
    if method == "lora":
        alpha = config.get("alpha")
        if alpha is None:
            raise UserError("this LoRA adapter has no alpha (RWKV-PEFT files do not store it); "
                            "pass --lora_alpha with the value used for training")
        return w + sign * lora_delta(p["lora_A"], p["lora_B"], float(alpha) / p["lora_A"].shape[0])
    init = lora_delta(p["lora_A0"], p["lora_B0"], 1.0)
    trained = lora_delta(p["lora_A"], p["lora_B"], 1.0)
    return w - init + trained if sign > 0 else w - trained + init


def _apply(base_sd: dict, adapter_sd: dict, config: dict, sign: int) -> dict:
    method = config.get("method")
    if method not in _SUFFIXES:
        raise UserError(f"unknown adapter method {method!r} in adapter_config.json; "
                        f"expected one of miss, lora, pissa")
    mode = config.get("mode", "default") if method == "miss" else ""
    groups, full = _split(adapter_sd, method)
    for k, t in full.items():
        if k not in base_sd or tuple(t.shape) != tuple(base_sd[k].shape):
            where = "is not in the base model" if k not in base_sd else \
                f"has shape {tuple(t.shape)} but the base has {tuple(base_sd[k].shape)}"
            raise UserError(f"adapter tensor {k} {where}; pass the base the adapter was trained on")
    for prefix, parts in sorted(groups.items()):
        _check_group(prefix, parts, base_sd, method, mode)
    out = dict(base_sd)
    if sign > 0:
        out.update({k: t.float() for k, t in full.items()})
    for prefix, parts in groups.items():
        key = prefix + ".weight"
        out[key] = _new_weight(out[key].float(), parts, config, sign)
    changed = [p + ".weight" for p in groups] + (list(full) if sign > 0 else [])
    for k in changed:
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

    adapter_sd, config = read_adapter(adapter_path)
    if lora_alpha is not None:
        if config.get("method") != "lora":
            raise UserError(f"--lora_alpha applies to LoRA adapters only; this one is "
                            f"{config.get('method')}: drop the flag")
        if lora_alpha <= 0:
            raise UserError(f"--lora_alpha must be positive, got {lora_alpha:g}")
        config = dict(config, alpha=lora_alpha)
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


def ai00_state_dict(sd: dict) -> dict:
    """Official state dict -> the tensors Ai00 loads from a .st file (fp16, contiguous, owned)."""
    out = {}
    for k, t in sd.items():
        for old, new in _AI00_RENAMES:
            k = k.replace(old, new)
        k = k.lower()
        if t.dim() >= 2 and any(s in k for s in _AI00_TRANSPOSED):
            t = t.transpose(-2, -1)
        t = t.detach().to("cpu", torch.float16).contiguous().clone()
        if not torch.isfinite(t).all():
            raise UserError(f"tensor {k} overflows fp16 (|x| > 65504), which Ai00 requires; "
                            f"write --format pth instead")
        out[k] = t
    return out
