"""Hugging Face-native RWKV-7 folders (`Rwkv7ForCausalLM`, transformers PR #47780, the RWKV org's
`RWKV/RWKV7-*-20260805` repos; facts in shared/specs/hf_native_rwkv7.md).

The layout is the official `.pth` renamed, nothing else: `emb.*`, `blocks.*`, `ln_out.*` get the
prefix `rwkv7.`, `head.weight` stays; every tensor keeps the reference shape (no transposes),
layer 0's v0/v1/v2 included. Read: `rwkv7.`-prefixed or bare names, `model.safetensors`,
`pytorch_model.bin` / `.pth`, or a sharded `*.index.json`; config.json is cross-checked against
the tensors. Written (`rwkvft export --format hf --layout native`): PR-conv's names, bf16 by
default, the common config.json key set (spec §1), generation_config.json, and the World
vocabulary file with a tokenizer_config.json naming bos = eos = pad = id 0.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..adapters.merge import merge_state_dict
from ..adapters.registry import get as method_of
from ..errors import UserError
from ..models.schema import infer_config, official_shapes
from ..utils import atomic_dir
from .common import load_pth, load_safetensors, official_order, read_json, write_json
from .registry import Format, register

PREFIX = "rwkv7."
ARCHITECTURE = "Rwkv7ForCausalLM"
WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pth")
VOCAB_FILE = "rwkv_vocab_v20230424.txt"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_TOP = ("emb.", "blocks.", "ln_out.")


# ---------------------------------------------------------------- names and config
def native_name(key: str) -> str:
    return PREFIX + key if key.startswith(_TOP) else key


def official_key(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def native_config(cfg, dtype: torch.dtype) -> dict:
    """config.json: spec §1's declared keys (the set common to every stored Rwkv7Config)."""
    return {
        "model_type": "rwkv7", "architectures": [ARCHITECTURE],
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd, "num_hidden_layers": cfg.n_layer,
        "head_dim": cfg.head_size, "num_heads": cfg.n_head,
        "decay_low_rank_dim": cfg.d_decay, "a_low_rank_dim": cfg.d_aaa,
        "v_low_rank_dim": cfg.d_mv, "gate_low_rank_dim": cfg.d_gate,
        "intermediate_size": cfg.dim_ffn, "norm_eps": 1e-5, "norm_bias": True,
        "max_position_embeddings": 8192, "tie_word_embeddings": False, "use_cache": True,
        "use_deep_embed": False, "wkv_state_dtype": "float32",
        "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0,
        "dtype": str(dtype).replace("torch.", ""),
    }


# config.json key -> (our ModelConfig field)
_CHECKED = {"vocab_size": "vocab_size", "hidden_size": "n_embd", "num_hidden_layers": "n_layer",
            "head_dim": "head_size", "num_heads": "n_head", "decay_low_rank_dim": "d_decay",
            "a_low_rank_dim": "d_aaa", "v_low_rank_dim": "d_mv", "gate_low_rank_dim": "d_gate",
            "intermediate_size": "dim_ffn"}


def check_config(config: dict, sd: dict, folder: Path) -> None:
    """UserError when config.json contradicts the tensors (spec §10.1)."""
    cfg = infer_config(sd)
    for key, field in _CHECKED.items():
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value != getattr(cfg, field):
            raise UserError(f"{folder}/config.json has {key} {value!r} but the tensors say "
                            f"{getattr(cfg, field)}; the folder is inconsistent: re-export it")
    heads, dim = config.get("num_heads"), config.get("head_dim")
    if isinstance(heads, int) and isinstance(dim, int) and heads * dim != cfg.n_embd:
        raise UserError(f"{folder}/config.json: num_heads {heads} x head_dim {dim} is not "
                        f"hidden_size {cfg.n_embd}; re-export the folder")


# ---------------------------------------------------------------- read
def _weight_files(folder: Path) -> list[Path]:
    for name in WEIGHTS:
        index = folder / (name + ".index.json")
        if index.exists():
            weight_map = read_json(index, "a sharded model folder").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise UserError(f"{index} has no weight_map object; re-export the folder")
            files = sorted({str(v) for v in weight_map.values()})
            bad = [f for f in files if Path(f).name != f or not (folder / f).is_file()]
            if bad:
                raise UserError(f"{index} names shard {bad[0]!r}, which is not a file in {folder}")
            return [folder / f for f in files]
        if (folder / name).exists():
            return [folder / name]
    raise UserError(f"HF folder {folder} has no weights ({', '.join(WEIGHTS)} or a sharded index)")


def _load(f: Path) -> dict:
    return load_safetensors(f) if f.suffix == ".safetensors" else load_pth(f)


def read_native(folder) -> dict:
    """A native RWKV-7 folder -> official state dict (config.json cross-checked)."""
    folder = Path(folder)
    config = read_json(folder / "config.json", "a Hugging Face model folder")
    sd = {}
    for f in _weight_files(folder):
        for name, t in _load(f).items():
            sd[official_key(name)] = t
    unknown = [k for k in sd if not k.startswith(_TOP) and k != "head.weight"]
    if unknown:
        raise UserError(f"HF folder {folder} has tensor {unknown[0]}, which is not part of an "
                        f"RWKV-7 model in the native layout")
    check_config(config, sd, folder)
    # the official file's order (safetensors sorts names; Runner's v7 detector needs the order)
    shapes = official_shapes(infer_config(sd))
    order = [k for k in shapes if k in sd] + [k for k in official_order(sd) if k not in shapes]
    return {k: sd[k].contiguous() for k in order}


def is_native_folder(path: Path) -> bool:
    """A model folder of the native layout: architectures says so, or (no architectures, no
    fla auto_map) its tensor names are the reference names."""
    if not (path.is_dir() and (path / "config.json").is_file()):
        return False
    try:
        config = read_json(path / "config.json", "a Hugging Face model folder")
    except UserError:
        return False
    arch = config.get("architectures")
    if isinstance(arch, list) and arch:
        return ARCHITECTURE in arch
    if "auto_map" in config:
        return False
    try:
        names = _first_names(path)
    except UserError:
        return False
    return any(n.startswith((PREFIX, "blocks.", "emb.")) for n in names)


def _first_names(folder: Path) -> list[str]:
    f = _weight_files(folder)[0]
    if f.suffix == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(str(f), framework="pt") as h:
                return list(h.keys())
        except Exception as e:  # noqa: BLE001 - a damaged file is the reader's error to report
            raise UserError(str(e)) from None
    return list(load_pth(f))


# ---------------------------------------------------------------- write
def write_native_folder(sd: dict, output: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    from safetensors.torch import save_file

    from ..data.tokenizer import _vocab_path
    cfg = infer_config(sd)
    if cfg.version != "x070":
        raise UserError(f"--layout native holds RWKV-7 (x070) models only; this one is {cfg.version}")
    full = dict(sd)
    if not cfg.layer0_v:   # the native model registers layer 0's (unused) v0/v1/v2: zeros
        full.update({"blocks.0.att.v0": torch.zeros_like(sd["blocks.1.att.v0"]),
                     "blocks.0.att.v1": torch.zeros_like(sd["blocks.1.att.v1"]),
                     "blocks.0.att.v2": torch.zeros_like(sd["blocks.1.att.v2"])})
    tensors = {native_name(k): full[k].detach().to("cpu", dtype).contiguous().clone()
               for k in official_order(full)}
    with atomic_dir(output) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_json(tmp / "config.json", native_config(cfg, dtype))
        write_json(tmp / "generation_config.json", {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0})
        shutil.copyfile(_vocab_path(), tmp / VOCAB_FILE)
        write_json(tmp / "tokenizer_config.json",
                   {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                    "model_max_length": 10240, "clean_up_tokenization_spaces": False})


def export_native(base_sd: dict, adapter_sd: dict, config: dict, output: Path, options: dict) -> list[str]:
    dtype_name = options.get("dtype") or "bf16"
    merged = merge_state_dict(base_sd, adapter_sd, config)
    write_native_folder(merged, output, DTYPES[dtype_name])
    label = method_of(config["method"]).describe(config)
    return [f"wrote Hugging Face-native RWKV-7 folder {output} ({label} adapter merged, {dtype_name}; "
            f"Rwkv7ForCausalLM names)"]


FORMAT = register(Format(
    name="hf-native", kind="model", output="folder",
    what="Hugging Face-native RWKV-7 folder (Rwkv7ForCausalLM, RWKV/RWKV7-*-20260805 layout; merged)",
    recognise=is_native_folder, read=read_native))   # written by `--format hf --layout native`
