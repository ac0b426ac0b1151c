"""Ai00 / web-rwkv LoRA files (`rwkvft export --format ai00-lora`).

Ai00 blends a LoRA file into the base at start-up (`[[lora]] path, alpha` in Config.toml;
spec runtime_formats.md, web-rwkv `src/runtime/loader.rs` lora_matrices / LoraBlend::full):
- per adapted Linear `blocks.L.{att|ffn}.{key|value|receptance|gate|output}`: `.lora.0` (in, r)
  and `.lora.1` (out, r), fp16; r = lora.0's 2nd dim; W += (alpha / r) lora.1 @ lora.0^T with
  alpha from the config, not the file;
- other tensors under their model (.st) names: those web-rwkv loads as vectors replace the
  base tensor; those it loads as matrices (w1..g2, r_k, v6 time_*_w1/w2) are added, so they
  are written as deltas. emb and head are loaded without LoRA blending: they cannot go here.

Each method's own `low_rank` gives its factors (LoRA as it is, alpha = its lora_alpha; PiSSA the
rank-2r product [B, -B0][A; A0], alpha = 2r; MiSS default/mini exactly lora.1 = D^T, lora.0 =
E^T, alpha = r); a method that declares none (state, full fine-tune, MiSS bat) is refused.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..adapters.merge import merge_state_dict
from ..adapters.registry import get as method_of
from ..errors import UserError
from ..utils import atomic_path
from .ai00_model import ai00_key
from .common import stats
from .hf_peft import split_adapter
from .registry import Format, register

# Ai00 (.st) names, last component, that web-rwkv loads with load_matrix_f16 (blend = add).
AI00_MATRICES = ("w1", "w2", "a1", "a2", "g1", "g2", "v1", "v2", "r_k",
                 "time_mix_w1", "time_mix_w2", "time_decay_w1", "time_decay_w2")
# Loaded without any LoRA blending (load_matrix_f16_padded*).
AI00_UNBLENDED = ("emb.weight", "head.weight")


def _ai00(key: str, t: torch.Tensor) -> tuple[str, torch.Tensor]:
    """(Ai00 name, fp32 tensor in Ai00 orientation) of one official tensor."""
    name, transposed = ai00_key(key, t.dim())
    return name, (t.float().transpose(-2, -1) if transposed else t.float())


def _full_tensors(full: dict, base_sd: dict) -> dict:
    out = {}
    for key, trained in full.items():
        if key in AI00_UNBLENDED:
            raise UserError(f"Ai00 does not blend LoRA tensors into {key} (it loads emb and head "
                            f"as they are); write the merged model instead: rwkvft merge --format st")
        name, value = _ai00(key, trained)
        if name.rpartition(".")[2] in AI00_MATRICES:
            value = value - _ai00(key, base_sd[key])[1]   # matrices are added: store the delta
        out[name] = value
    return out


def ai00_lora_tensors(base_sd: dict, adapter_sd: dict, config: dict) -> tuple[dict, float]:
    """({Ai00 name: fp16 tensor}, alpha for Config.toml)."""
    method = method_of(config.get("method"))
    merge_state_dict(base_sd, adapter_sd, config)     # every fit / shape / NaN check
    groups, full = split_adapter(adapter_sd, method)
    if not groups and not full:
        raise UserError(f"this {method.describe(config)} adapter holds no tensors; an Ai00 "
                        f"LoRA would change nothing: write the merged model instead (rwkvft merge --format st)")
    tensors, alphas = {}, set()
    for prefix, parts in sorted(groups.items()):
        up, down, scale = method.factors(parts, config, base_sd[prefix + ".weight"], "--format ai00-lora")
        alphas.add(scale * down.shape[0])   # Ai00 scales by alpha / rank
        tensors[f"{prefix.lower()}.lora.0"] = down.t()
        tensors[f"{prefix.lower()}.lora.1"] = up
    if len(alphas) > 1:   # one alpha per [[lora]] entry: ranks must agree (they do for our files)
        raise UserError(f"the adapter's layers need different Ai00 alphas {sorted(alphas)}; "
                        f"Ai00 takes one alpha per LoRA file: use rwkvft merge --format st")
    tensors.update(_full_tensors(full, base_sd))
    out = {}
    for k, t in tensors.items():
        t16 = t.detach().to("cpu", torch.float16).contiguous().clone()
        if not torch.isfinite(t16).all():
            raise UserError(f"tensor {k} overflows fp16 (|x| > 65504), which Ai00 requires; "
                            f"write the merged model instead: rwkvft merge --format pth")
        out[k] = t16
    return out, (alphas.pop() if alphas else 1.0)


def write_ai00_lora(base_sd: dict, adapter_sd: dict, adapter_config: dict, output: Path) -> list[str]:
    """Write the Ai00 LoRA safetensors file; return the lines telling the user what to configure."""
    from safetensors.torch import save_file

    tensors, alpha = ai00_lora_tensors(base_sd, adapter_sd, adapter_config)
    with atomic_path(output) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    n = sum(1 for k in tensors if k.endswith(".lora.0"))
    label = method_of(adapter_config["method"]).describe(adapter_config)
    return [f"wrote Ai00 LoRA {output} ({label}, {n} matrices, "
            f"{len(tensors) - 2 * n} other tensors, fp16)",
            "add to Ai00's assets/configs/Config.toml (next to the base model it was trained on):",
            "[[lora]]", f'path = "{Path(output).resolve()}"', f"alpha = {alpha:g}"]


def _describe(path: Path, sd: dict) -> dict:
    ranks = sorted({int(t.shape[1]) for k, t in sd.items() if k.endswith(".lora.0")})
    matrices = sum(1 for k in sd if k.endswith(".lora.0"))
    layers = {int(k.split(".")[1]) for k in sd if k.startswith("blocks.")}
    return {"kind": "ai00 lora", "format": path.suffix.lower().lstrip(".") or "st",
            "method": "lora (alpha comes from Ai00's Config.toml)",
            "ranks": ranks, "matrices": matrices, "other_tensors": len(sd) - 2 * matrices,
            "n_layer": 1 + max(layers) if layers else 0, **stats(sd)}


FORMAT = register(Format(
    name="ai00-lora", kind="adapter", needs="low_rank",
    what="Ai00 / web-rwkv LoRA safetensors ([[lora]] in Config.toml; MiSS default/mini, LoRA, PiSSA)",
    recognise=lambda p: p.is_file() and p.suffix.lower() in (".st", ".safetensors"),
    claims=lambda p, sd: any(k.endswith((".lora.0", ".lora.1")) for k in sd), describe=_describe,
    export=lambda b, a, c, out, opts: write_ai00_lora(b, a, c, out)))
