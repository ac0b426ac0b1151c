"""HF peft adapter folders: write them (`rwkvft export --format hf-peft`) and read them back.

A folder is `adapter_config.json` (peft's MissConfig or LoraConfig fields) plus
`adapter_model.safetensors` with keys `base_model.model.<module>.<param>`:
- written for the `--format hf` model of the base: modules `model.layers.L.attn.r_proj`,
  `model.layers.L.ffn.key`...; MiSS `miss_block` shapes (r, out) default, (out/r, r, r) bat,
  (r, mini_r) mini; LoRA `lora_A.weight` (r, in), `lora_B.weight` (out, r). PiSSA goes out as
  the exact rank-2r LoRA [B, -B0][A; A0] with lora_alpha = 2r (scale 1).
- read: those names, and RWKV-PEFT's (`--merge 0` writes `{proj_dir}-adapter` with HF peft's
  save_pretrained on its own model, so the modules carry the checkpoint's names:
  `base_model.model.blocks.L.att.receptance`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError
from ..foreign_json import hf_peft_config
from ..utils import atomic_dir
from .export_common import checked_merge, low_rank_factors, method_label, split_adapter
from .hf_export import hf_name, official_name, require_rwkv7

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."
_INIT_WEIGHTS = {"default": True, "bat": "bat", "mini": "mini"}
_MODES = {True: "default", False: "default", "bat": "bat", "mini": "mini"}


# ---------------------------------------------------------------- write
def _hf_module(prefix: str) -> str:
    return hf_name(prefix + ".weight")[0][:-len(".weight")]


def _miss(groups: dict, config: dict) -> tuple[dict, dict]:
    mode = config.get("mode", "default")
    if mode == "bat_in":
        raise UserError("MiSS bat_in (RWKV-PEFT's input-block bat) has no HF peft equivalent (peft's "
                        "bat blocks by output rows); export the merged model with --format hf")
    tensors = {f"{PREFIX}{_hf_module(p)}.miss_block": parts["miss"] for p, parts in groups.items()}
    peft = {"peft_type": "MISS", "r": int(config["r"]), "miss_dropout": float(config.get("dropout", 0.0)),
            "mini_r": int(config.get("mini_r") or 1), "init_weights": _INIT_WEIGHTS[mode]}
    return tensors, peft


def _lora(groups: dict, config: dict, base_sd: dict) -> tuple[dict, dict]:
    tensors, ranks = {}, set()
    for p, parts in groups.items():
        up, down, scale = low_rank_factors(parts, config, base_sd[p + ".weight"], "HF peft")
        module = PREFIX + _hf_module(p)
        tensors[f"{module}.lora_A.weight"], tensors[f"{module}.lora_B.weight"] = down, up
        ranks.add((down.shape[0], scale * down.shape[0]))
    if len(ranks) != 1:   # LoraConfig has one r / alpha (inject uses one config, so ours agree)
        raise UserError(f"the adapter's layers have different ranks / alphas {sorted(ranks)}; "
                        f"export the merged model with --format hf")
    (r, alpha), = ranks
    peft = {"peft_type": "LORA", "r": r, "lora_alpha": alpha,
            "lora_dropout": float(config.get("dropout", 0.0)), "fan_in_fan_out": False,
            "use_rslora": False, "use_dora": False, "init_lora_weights": True,
            "rank_pattern": {}, "alpha_pattern": {}}
    return tensors, peft


def hf_peft_adapter(base_sd: dict, adapter_sd: dict, config: dict) -> tuple[dict, dict]:
    """(adapter_model tensors, adapter_config dict) for the HF model of `base_sd`."""
    require_rwkv7(base_sd, "--format hf-peft")
    checked_merge(base_sd, adapter_sd, config)
    groups, full = split_adapter(adapter_sd)
    if not groups:  # a state adapter or a full fine-tune: say so, not "from train_parts"
        other = ("a state file: --format runner-state or ai00-state" if config.get("method") == "state"
                 else "the merged model: --format hf")
        raise UserError(f"a {method_label(config)} adapter has no adapter matrices, and matrices are "
                        f"all an HF peft adapter holds; export {other}")
    if full:
        raise UserError(f"this adapter also trains full tensors ({sorted(full)[0]}, ... from "
                        f"train_parts), which an HF peft adapter cannot carry; export the merged "
                        f"model with --format hf instead")
    if config.get("method") == "miss":
        tensors, peft = _miss(groups, config)
    else:
        tensors, peft = _lora(groups, config, base_sd)
    targets = sorted({".".join(_hf_module(p).split(".")[-2:]) for p in groups})
    peft.update(task_type="CAUSAL_LM", target_modules=targets, bias="none", modules_to_save=None,
                layers_to_transform=None, layers_pattern=None, base_model_name_or_path=None,
                revision=None, inference_mode=True)
    return {k: v.detach().float().contiguous().clone() for k, v in tensors.items()}, peft


def write_hf_peft(base_sd: dict, adapter_sd: dict, adapter_config: dict, output: Path) -> list[str]:
    from safetensors.torch import save_file

    tensors, peft = hf_peft_adapter(base_sd, adapter_sd, adapter_config)
    with atomic_dir(output) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(peft, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [f"wrote HF peft adapter folder {output} ({method_label(adapter_config)} as peft "
            f"{peft['peft_type']}, {len(tensors)} tensors)",
            "use it on the --format hf folder of the same base: PeftModel.from_pretrained("
            f"RWKV7ForCausalLM.from_pretrained(HF_FOLDER), '{output}')"]


# ---------------------------------------------------------------- read
def is_hf_peft_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).exists() and not (path / "config.json").exists()


def _read_config(folder: Path) -> dict:
    cfg = hf_peft_config(folder)
    kind = str(cfg["peft_type"]).upper()
    if kind not in ("MISS", "LORA"):
        raise UserError(f"HF peft adapter {folder} is {kind}; rwkvft reads MISS and LORA adapters")
    unsupported = [k for k in ("use_dora", "use_rslora", "fan_in_fan_out") if cfg.get(k)]
    unsupported += [k for k in ("rank_pattern", "alpha_pattern", "modules_to_save") if cfg.get(k)]
    if cfg.get("bias", "none") != "none":
        unsupported.append(f"bias={cfg['bias']}")
    if unsupported:
        raise UserError(f"HF peft adapter {folder} uses {', '.join(unsupported)}, which rwkvft does "
                        f"not support; merge it with HF peft (merge_and_unload) instead")
    return cfg


def _read_weights(folder: Path) -> dict:
    from .rwkv_format import read_state_dict
    for name in (WEIGHTS_NAME, "adapter_model.bin"):
        if (folder / name).exists():
            return read_state_dict(folder / name) if name.endswith(".safetensors") else \
                _read_bin(folder / name)
    raise UserError(f"HF peft adapter folder {folder} has no {WEIGHTS_NAME}; restore it")


def _read_bin(path: Path) -> dict:
    try:
        return dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # noqa: BLE001 - any failure is a damaged or foreign file
        raise UserError(f"{path} cannot be read as tensors ({str(e)[:100]}); restore it") from None


def _official_prefix(module: str, folder: Path) -> str:
    """`model.layers.0.attn.r_proj` (HF) or `blocks.0.att.receptance` (RWKV-PEFT) -> official."""
    if module.startswith("blocks."):
        return module
    key, _ = official_name(module + ".weight")
    if not key:
        raise UserError(f"HF peft adapter {folder} adapts module {module}, which is not part of an "
                        f"RWKV-7 model: it was trained on another architecture")
    return key[:-len(".weight")]


def read_hf_peft(folder) -> tuple[dict, dict]:
    """(tensors in our names, config dict) of an HF peft MISS / LORA adapter folder."""
    folder = Path(folder)
    cfg = _read_config(folder)
    locals_ = {"miss_block": "miss", "lora_A.weight": "lora_A", "lora_B.weight": "lora_B"}
    sd = {}
    for key, t in _read_weights(folder).items():
        body = key[len(PREFIX):] if key.startswith(PREFIX) else key
        for suffix, ours in locals_.items():
            if body.endswith("." + suffix):
                sd[f"{_official_prefix(body[:-len(suffix) - 1], folder)}.{ours}"] = t
                break
        else:
            raise UserError(f"HF peft adapter {folder} holds tensor {key}, which is not a MiSS or "
                            f"LoRA matrix; rwkvft reads miss_block / lora_A / lora_B only")
    if not sd:
        raise UserError(f"HF peft adapter {folder} holds no tensors; restore {WEIGHTS_NAME}")
    targets = sorted({".".join(k.split(".")[-3:-1]) for k in sd})
    if str(cfg["peft_type"]).upper() == "MISS":
        mode = _MODES.get(cfg.get("init_weights", True), "default")
        config = {"method": "miss", "mode": mode, "r": int(cfg.get("r", 64)),
                  "mini_r": int(cfg.get("mini_r", 1)) if mode == "mini" else 0,
                  "dropout": float(cfg.get("miss_dropout", 0.0))}
    else:
        config = {"method": "lora", "r": int(cfg.get("r", 8)), "alpha": float(cfg.get("lora_alpha", 8)),
                  "dropout": float(cfg.get("lora_dropout", 0.0))}
    config.update(targets=targets, train_parts=[], source="hf-peft")
    return sd, config
