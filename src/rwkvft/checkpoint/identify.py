"""What a file or folder we (or RWKV-PEFT / Ai00 / HF) write is, for `rwkvft inspect`.

Kinds: official model (.pth / .safetensors), Ai00 model (.st: lower-case renamed keys, fp16,
transposed low-rank matrices), Ai00 LoRA (`*.lora.0/1`), adapter (ours with adapter_config.json,
or RWKV-PEFT's), state (`.pth` of only `blocks.N.att.time_state` for RWKV Runner, fp16
safetensors `.state` for Ai00), Hugging Face RWKV-7 model folder, HF peft adapter folder.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import UserError
from ..utils import require_file

_STATE_KEY = re.compile(r"blocks\.\d+\.att\.time_state")
_ADAPTER_LOCALS = ("miss", "lora_A", "lora_B", "lora_A0", "lora_B0", "disha", "bone")


def _stats(sd: dict) -> dict:
    return {"tensors": len(sd), "parameters": sum(t.numel() for t in sd.values()),
            "dtypes": sorted({str(t.dtype).replace("torch.", "") for t in sd.values()})}


def _raw(p: Path) -> dict:
    if p.suffix.lower() == ".state":   # Ai00 state: safetensors under its own suffix
        from safetensors.torch import load_file
        try:
            return load_file(str(p))
        except Exception as e:  # safetensors raises its own error type for malformed files
            raise UserError(f"{p} is not a readable safetensors .state file ({str(e)[:100]})") from None
    from .rwkv_format import read_state_dict
    return read_state_dict(p)


def identify(path) -> dict:
    """{"kind": ..., "format": ..., sizes...} for any format rwkvft writes or reads."""
    p = Path(path)
    if p.is_dir():
        return _folder(p)
    require_file(p, "checkpoint")
    sd = _raw(p)
    fmt = p.suffix.lower().lstrip(".") or "pth"
    if sd and all(_STATE_KEY.fullmatch(k) for k in sd):
        return _state(sd, fmt)
    if any(k.endswith((".lora.0", ".lora.1")) for k in sd):
        return _ai00_lora(sd, fmt)
    # a merged model saved next to a run's adapter_config.json is still a model
    if any(k.rpartition(".")[2] in _ADAPTER_LOCALS for k in sd) or \
            ((p.parent / "adapter_config.json").exists() and "emb.weight" not in sd):
        return _adapter(p, fmt)
    if _is_ai00_model(sd, fmt):
        return dict(_model(official_from_ai00(sd)), kind="ai00 model", format="st")
    return dict(_model(sd), kind="model", format=fmt)


def _model(sd: dict) -> dict:
    from ..cli.inspect_cmd import describe
    return describe(sd)


def _folder(p: Path) -> dict:
    from .hf_peft import is_hf_peft_folder, read_hf_peft
    if is_hf_peft_folder(p):
        import json
        sd, config = read_hf_peft(p)
        peft_type = json.loads((p / "adapter_config.json").read_text())["peft_type"]
        info = {"kind": "hf-peft adapter", "format": f"peft {peft_type}"}
        info.update(_adapter_info(sd, config))
        return info
    from .hf_export import read_hf_folder
    return dict(_model(read_hf_folder(p)), kind="hf model", format="hf folder")


def _state(sd: dict, fmt: str) -> dict:
    shapes = {tuple(t.shape) for t in sd.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise UserError(f"state tensors have shapes {sorted(shapes)}; expected one (H, N, N) per layer")
    h, n, _ = next(iter(shapes))
    runtime = "Ai00 (.state, fp16 safetensors)" if fmt == "state" else "RWKV Runner / rwkv pip (.pth)"
    return {"kind": "state", "format": fmt, "runtime": runtime, "n_layer": len(sd), "n_head": h,
            "head_size": n, "n_embd": h * n, **_stats(sd)}


def _ai00_lora(sd: dict, fmt: str) -> dict:
    ranks = sorted({int(t.shape[1]) for k, t in sd.items() if k.endswith(".lora.0")})
    matrices = sum(1 for k in sd if k.endswith(".lora.0"))
    layers = {int(k.split(".")[1]) for k in sd if k.startswith("blocks.")}
    return {"kind": "ai00 lora", "format": fmt, "method": "lora (alpha comes from Ai00's Config.toml)",
            "ranks": ranks, "matrices": matrices, "other_tensors": len(sd) - 2 * matrices,
            "n_layer": 1 + max(layers) if layers else 0, **_stats(sd)}


def _adapter(p: Path, fmt: str) -> dict:
    from .adapter_io import read_adapter
    sd, config = read_adapter(p)
    info = {"kind": "adapter", "format": fmt}
    info.update(_adapter_info(sd, config))
    return info


def _adapter_info(sd: dict, config: dict) -> dict:
    base = config.get("base") or {}
    groups = {k.rpartition(".")[0] for k in sd if k.rpartition(".")[2] in _ADAPTER_LOCALS}
    info = {"method": config.get("method"), "source": config.get("source", "rwkvft")}
    if config.get("method") == "miss":
        info["mode"] = config.get("mode", "default")
    for key in ("r", "alpha", "mini_r"):
        if config.get(key):
            info[key] = config[key]
    info.update({"adapted_matrices": len(groups), "targets": config.get("targets") or
                 sorted({".".join(g.split(".")[-2:]) for g in groups}),
                 "train_parts": config.get("train_parts", [])})
    info.update({f"base_{k}": base[k] for k in ("version", "n_layer", "n_embd", "vocab_size") if k in base})
    return dict(info, **_stats(sd))


# ---------------------------------------------------------------- Ai00 .st models
def _is_ai00_model(sd: dict, fmt: str) -> bool:
    keys = set(sd)
    if any(".time_first" in k for k in keys):
        return True   # RWKV-5/6 .st: time_faaaa renamed
    w1 = sd.get("blocks.0.att.w1")
    emb = sd.get("emb.weight")
    if w1 is None or emb is None or w1.dim() != 2:
        return False
    # RWKV-7: the .st stores w1 as (D, C), the official file as (C, D)
    return w1.shape[0] != emb.shape[1] or (fmt == "st" and w1.shape[0] == w1.shape[1])


def official_from_ai00(sd: dict) -> dict:
    """Undo Ai00's renames and transposes (merge.ai00_key) so the schema can read the file."""
    from .merge import ai00_key
    v6 = "blocks.0.att.time_mix_x" in sd   # only RWKV-6 has time_maa_x (renamed time_mix_x)
    out = {}
    for k, t in sd.items():
        name = k.replace("time_first", "time_faaaa")
        if v6:
            name = name.replace("time_mix", "time_maa")
        _, transposed = ai00_key(name, t.dim())
        out[name] = t.transpose(-2, -1) if transposed else t
    return out
