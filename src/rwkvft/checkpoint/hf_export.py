"""Hugging Face RWKV-7 model folders (`rwkvft export --format hf`), and reading them back.

Names and shapes of fla-hub's RWKV-7 / the `rwkv7-hf` package (spec runtime_formats.md; fla
`utils/convert_from_rwkv7.py`, rwkv7-hf `converter.translate_name`): emb -> model.embeddings,
blocks.L -> model.layers.L, att -> attn, ln0/ln1/ln2 -> pre_norm/attn_norm/ffn_norm,
receptance/key/value/output -> r_proj/k_proj/v_proj/o_proj (attn only), ln_x -> g_norm,
{w,a,g,v}0/1/2 -> {x}_lora.lora.2.bias / lora.0.weight (transposed) / lora.2.weight
(transposed), ln_out -> model.norm, head -> lm_head. Layer 0's unused v0/v1/v2 are dropped.

The folder holds config.json (model_type rwkv7), generation_config.json, model.safetensors
(the base's dtype) and the tokenizer files (rwkv_vocab_v20230424.txt + tokenizer_config.json).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from ..errors import UserError
from ..foreign_json import hf_model_type, hf_weight_files
from ..utils import atomic_dir
from .export_common import checked_merge, method_label

_PROJ = {"receptance": "r_proj", "key": "k_proj", "value": "v_proj", "output": "o_proj", "ln_x": "g_norm"}
_BLOCK = {"att": "attn", "ffn": "ffn", "ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm"}
_LORA = {"0": "lora.2.bias", "1": "lora.0.weight", "2": "lora.2.weight"}
_TOP = {"emb.weight": "model.embeddings.weight", "ln_out.weight": "model.norm.weight",
        "ln_out.bias": "model.norm.bias", "head.weight": "lm_head.weight"}
# attn vectors the HF modules keep as (1, 1, C); every other vector is (C,)
_HF_3D = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")
VOCAB_FILE = "rwkv_vocab_v20230424.txt"
WEIGHTS_FILE = "model.safetensors"


def hf_name(key: str) -> tuple[str, bool]:
    """(HF name, transposed) of an official RWKV-7 key; ("", False) for unused tensors."""
    if key in _TOP:
        return _TOP[key], False
    if key in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"):
        return "", False
    parts = key.split(".")
    parts[0:3] = ["model", "layers", parts[1], _BLOCK[parts[2]]]
    local = parts[4]
    if parts[3] == "attn" and re.fullmatch(r"[wavg][012]", local):
        parts[4:] = [f"{local[0]}_lora", _LORA[local[1]]]
        return ".".join(parts), local[1] in "12"
    if parts[3] == "attn" and local in _PROJ:
        parts[4] = _PROJ[local]
    return ".".join(parts), False


def _hf_shape(hf: str, t: torch.Tensor, cfg) -> torch.Tensor:
    local = hf.rsplit(".", 1)[-1]
    if local in _HF_3D and ".attn." in hf:
        return t.reshape(1, 1, -1)
    if local == "r_k":
        return t.reshape(cfg.n_head, cfg.head_size)
    return t.reshape(-1) if t.dim() == 3 else t


def hf_state_dict(sd: dict, cfg, dtype: torch.dtype) -> dict:
    out = {}
    for key, t in sd.items():
        name, transposed = hf_name(key)
        if not name:
            continue
        t = t.detach().to("cpu", torch.float32)
        t = t.t() if transposed else t
        out[name] = _hf_shape(name, t, cfg).to(dtype).contiguous().clone()
    return out


def hf_config(cfg, dtype: torch.dtype) -> dict:
    """config.json fields read by rwkv7-hf's RWKV7Config and fla's RWKV7Config."""
    C = cfg.n_embd
    return {
        "model_type": "rwkv7", "architectures": ["RWKV7ForCausalLM"],
        "vocab_size": cfg.vocab_size, "hidden_size": C, "num_hidden_layers": cfg.n_layer,
        "num_heads": cfg.n_head, "head_dim": cfg.head_size, "attention_hidden_size": C,
        "intermediate_size": cfg.dim_ffn, "hidden_ratio": cfg.dim_ffn / C,
        "decay_low_rank_dim": cfg.d_decay, "a_low_rank_dim": cfg.d_aaa,
        "gate_low_rank_dim": cfg.d_gate, "v_low_rank_dim": cfg.d_mv or 32,
        "value_dim": [C] * cfg.n_layer, "norm_eps": 1e-5, "norm_bias": True, "norm_first": True,
        "hidden_act": "sqrelu", "attn_mode": "chunk", "fuse_norm": False,
        "fuse_cross_entropy": False, "use_cache": True, "tie_word_embeddings": False,
        "pad_token_id": 0, "eos_token_id": 0, "bos_token_id": 1,
        "torch_dtype": str(dtype).replace("torch.", ""),
    }


def _write_tokenizer(folder: Path, vocab_size: int, chat_template: str) -> None:
    from ..data.templates.jinja import write_chat_template
    from ..data.tokenizer import _vocab_path
    shutil.copyfile(_vocab_path(), folder / VOCAB_FILE)
    tok = {"tokenizer_class": "RWKV7Tokenizer", "model_vocab_size": vocab_size,
           "pad_token": "<|padding|>", "eos_token": "<|endoftext|>", "errors": "replace"}
    write_chat_template(folder, tok, chat_template)  # chat_template.jinja + the tokenizer_config field
    _json(folder / "tokenizer_config.json", tok)
    _json(folder / "special_tokens_map.json", {"pad_token": "<|padding|>", "eos_token": "<|endoftext|>"})


def _json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def require_rwkv7(sd: dict, what: str):
    from .rwkv_format import infer_config
    cfg = infer_config(sd)
    if cfg.version != "x070":
        names = {"x060": "RWKV-6 (x060)", "x052": "RWKV-5.2 (x052)"}
        raise UserError(f"{what} supports RWKV-7 (x070) models only; this base is "
                        f"{names.get(cfg.version, cfg.version)}: use rwkvft merge --format pth "
                        f"(rwkv pip, RWKV Runner) or --format st (Ai00) instead")
    return cfg


def write_hf_folder(sd: dict, output: Path, chat_template: str = "g1") -> None:
    """Write a merged RWKV-7 state dict as an HF model folder, atomically."""
    from safetensors.torch import save_file

    cfg = require_rwkv7(sd, "--format hf")
    dtype = sd["emb.weight"].dtype
    tensors = hf_state_dict(sd, cfg, dtype)
    with atomic_dir(output) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        _json(tmp / "config.json", hf_config(cfg, dtype))
        _json(tmp / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 0, "pad_token_id": 0})
        _write_tokenizer(tmp, cfg.vocab_size, chat_template)


def write_hf(base_sd: dict, adapter_sd: dict, adapter_config: dict, output: Path) -> list[str]:
    """Merge the adapter into the base and write the HF folder (base dtype)."""
    require_rwkv7(base_sd, "--format hf")
    merged = checked_merge(base_sd, adapter_sd, adapter_config)
    dtype = base_sd["emb.weight"].dtype
    write_hf_folder({k: v.to(dtype) for k, v in merged.items()}, output,
                    adapter_config.get("chat_template", "g1"))
    return [f"wrote Hugging Face RWKV-7 folder {output} ({method_label(adapter_config)} adapter merged, "
            f"{str(dtype).replace('torch.', '')})",
            *_eps_note(base_sd),
            "load it with: pip install rwkv7-hf; python -c \"from rwkv7_hf import RWKV7ForCausalLM, "
            f"RWKV7Tokenizer; m = RWKV7ForCausalLM.from_pretrained('{output}')\""]


def _eps_note(sd: dict) -> list[str]:
    head_size = require_rwkv7(sd, "--format hf").head_size
    if head_size == 64:
        return []
    # RWKV's ln_x eps is 64e-5 for every head size; HF's g_norm uses head_dim * norm_eps
    return [f"note: head size {head_size} (not 64): HF loaders use ln_x eps {head_size}e-5 "
            f"instead of RWKV's 64e-5, so logits differ slightly"]


# ---------------------------------------------------------------- reading back
def official_name(hf: str) -> tuple[str, bool]:
    """Inverse of hf_name: (official key, transposed)."""
    inverse_top = {v: k for k, v in _TOP.items()}
    if hf in inverse_top:
        return inverse_top[hf], False
    m = re.fullmatch(r"model\.layers\.(\d+)\.(\w+)\.(.+)", hf)
    if not m:
        return "", False
    layer, block, rest = m.groups()
    inv_block = {v: k for k, v in _BLOCK.items()}
    if block not in inv_block:
        return "", False
    lora = re.fullmatch(r"([wavg])_lora\.(lora\.\d\.\w+)", rest)
    if lora:
        num = {v: k for k, v in _LORA.items()}.get(lora.group(2))
        return (f"blocks.{layer}.att.{lora.group(1)}{num}", num in "12") if num else ("", False)
    first, _, tail = rest.partition(".")
    if block == "attn":
        first = {v: k for k, v in _PROJ.items()}.get(first, first)
    return ".".join(filter(None, [f"blocks.{layer}.{inv_block[block]}", first, tail])), False


def _weights_files(folder: Path) -> list[Path]:
    index = folder / (WEIGHTS_FILE + ".index.json")
    if index.exists():
        names = hf_weight_files(index)
        return [folder / n for n in names]
    if (folder / WEIGHTS_FILE).exists():
        return [folder / WEIGHTS_FILE]
    raise UserError(f"HF folder {folder} has no {WEIGHTS_FILE}; export it again with "
                    f"rwkvft export --format hf (pytorch_model.bin folders are not read)")


def read_hf_folder(folder) -> dict:
    """An RWKV-7 HF model folder (ours, fla-hub's, rwkv7-hf's) -> official state dict."""
    from safetensors.torch import load_file
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise UserError(f"{folder} is a folder without config.json; pass a model file (.pth, "
                        f".safetensors, .st) or a Hugging Face model folder")
    model_type = hf_model_type(cfg_path)
    if model_type != "rwkv7":
        raise UserError(f"HF folder {folder} holds a {model_type!r} model (config.json model_type); "
                        f"rwkvft reads RWKV-7 folders (model_type 'rwkv7') or official RWKV files only")
    sd = {}
    for f in _weights_files(folder):
        try:
            sd.update(load_file(str(f)))
        except Exception as e:  # safetensors raises its own error type for malformed files
            raise UserError(f"{f} is not a readable safetensors file ({str(e)[:100]}); re-export it") from None
    return _to_official(sd, folder)


def _to_official(sd: dict, folder: Path) -> dict:
    out = {}
    for hf, t in sd.items():
        key, transposed = official_name(hf)
        if not key:
            raise UserError(f"HF folder {folder} has tensor {hf}, which is not part of an RWKV-7 "
                            f"model; it is another architecture or a modified export")
        t = t.t() if transposed else t
        local = key.rsplit(".", 1)[-1]
        if t.dim() == 1 and not key.endswith((".weight", ".bias")) and local != "r_k":
            t = t.reshape(1, 1, -1)   # official (1, 1, C) vectors
        out[key] = t.contiguous()
    from .rwkv_format import _official_order
    return {k: out[k] for k in _official_order(out)}
