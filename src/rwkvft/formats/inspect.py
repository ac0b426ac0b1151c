"""`rwkvft inspect`: what a file or folder is, asked of the format registry.

Folders: the first model / adapter format that recognises it (HF model, HF peft adapter).
Files: the raw tensors are read once and each format that `claims` them is asked in turn:
state files (only `blocks.N.att.time_state`), Ai00 LoRA (`*.lora.0/1`), adapters (ours with
adapter_config.json, RWKV-PEFT's), Ai00 models (.st), official models (.pth / .safetensors).
"""
from __future__ import annotations

from pathlib import Path

from ..adapters import registry as methods
from ..errors import UserError
from ..models.schema import infer_config
from ..utils import require_file
from . import registry
from .adapter_file import read_model_file
from .common import load_safetensors, stats


def describe_model(sd) -> dict:
    """Architecture, sizes and storage facts of an official state dict."""
    cfg = infer_config(sd)
    info = {"version": cfg.version, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd,
            "head_size": cfg.head_size, "n_head": cfg.n_head, "vocab_size": cfg.vocab_size,
            "dim_ffn": cfg.dim_ffn, "d_decay": cfg.d_decay}
    if cfg.version == "x070":
        info.update({"d_aaa": cfg.d_aaa, "d_mv": cfg.d_mv, "d_gate": cfg.d_gate,
                     "layer0_v": cfg.layer0_v})
    elif cfg.version == "x060":
        info["d_mix"] = cfg.d_mix
    info.update({"parameters": sum(t.numel() for t in sd.values()), "tensors": len(sd),
                 "dtypes": sorted({str(t.dtype).replace("torch.", "") for t in sd.values()})})
    return info


def adapter_info(sd: dict, config: dict) -> dict:
    """Method, sizes and base of an adapter (any reader's (tensors, config))."""
    base = config.get("base") or {}
    try:
        method = methods.get(config.get("method"))
    except UserError:
        method = None
    linear = method is not None and method.apply_delta is not None
    groups = {k.rpartition(".")[0] for k in sd if linear and k.rpartition(".")[2] in method.suffixes}
    info = {"method": config.get("method"), "source": config.get("source", "rwkvft")}
    if method is not None and "mode" in method.keys:
        info["mode"] = config.get("mode", method.keys["mode"])
    for key in ("r", "alpha", "mini_r"):
        if config.get(key):
            info[key] = config[key]
    info.update({"adapted_matrices": len(groups), "targets": config.get("targets") or
                 sorted({".".join(g.split(".")[-2:]) for g in groups}),
                 "train_parts": config.get("train_parts", [])})
    info.update({f"base_{k}": base[k] for k in ("version", "n_layer", "n_embd", "vocab_size") if k in base})
    return dict(info, **stats(sd))


def identify(path) -> dict:
    """{"kind": ..., "format": ..., sizes...} for any format rwkvft writes or reads."""
    p = Path(path)
    if p.is_dir():
        return _folder(p)
    require_file(p, "checkpoint")
    sd = load_safetensors(p, "safetensors .state file") if p.suffix.lower() == ".state" else read_model_file(p)
    fmt = p.suffix.lower().lstrip(".") or "pth"
    for kind in ("state", "adapter"):
        for f in registry.formats(kind):
            if f.claims is not None and f.describe is not None and f.claims(p, sd):
                return f.describe(p, sd)
    # a merged model saved next to a run's adapter_config.json is still a model
    if any(k.rpartition(".")[2] in methods.all_suffixes() for k in sd) or \
            ((p.parent / "adapter_config.json").exists() and "emb.weight" not in sd):
        adapter = registry.reader_of(p, "adapter")
        return {"kind": "adapter", "format": fmt, **adapter_info(*adapter.read(p))}
    st = registry.get("st")
    if st.claims(p, sd):
        return dict(describe_model(st.read(p)), kind="ai00 model", format="st")
    return dict(describe_model(sd), kind="model", format=fmt)


def _folder(p: Path) -> dict:
    adapter = registry.reader_of(p, "adapter")
    if adapter is not None:
        sd, config = adapter.read(p)
        return {"kind": "hf-peft adapter", "format": f"peft {config.get('peft_type', '?')}",
                **adapter_info(sd, config)}
    model = registry.reader_of(p, "model")
    if model is None:
        raise UserError(f"{p} is a folder without config.json; pass a model file (.pth, "
                        f".safetensors, .st) or a Hugging Face model folder")
    return dict(describe_model(model.read(p)), kind="hf model", format="hf folder")
