"""Flags people bring from RWKV-PEFT (and typos): instead of argparse's bare "unrecognized
arguments", say where each one's meaning went here, or which flag was meant.

RWKV-PEFT flags with exactly our meaning are accepted elsewhere: `config.IGNORED_FLAGS` (no
effect here, with a note) and the method aliases (`--peft bone` / `disha` are MiSS). The ones
below are refused with a pointer; the `*_config` JSON flags get the equivalent `--peft` /
`--peft_config` spelled out from their own value.
"""
from __future__ import annotations

import difflib
import json

# old JSON flag -> (our --peft method, {its key: our peft_config key}); "*_load" keys become
# --adapter_init (a saved adapter to start from), keys mapped to None have no counterpart
_CONFIG_FLAGS = {
    "lora_config": ("lora", {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout"}),
    "pissa_config": ("pissa", {"pissa_r": "r", "svd_niter": "svd_niter", "pissa_init": None}),
    "bone_config": ("miss", {"bone_r": "r", "bone_mode": "mode"}),
    "disha_config": ("miss", {"r": "r", "mode": "mode"}),
    "miss_config": ("miss", {"r": "r", "mode": "mode"}),
}

_LEGACY = "an RWKV-PEFT option rwkvft does not have"
POINTERS = {
    "lora": "RWKV-PEFT's old LoRA switch: use --peft lora --peft_config '{\"r\": 8, \"alpha\": 32}'",
    "lora_r": "use --peft_config '{\"r\": N}' (with --peft lora)",
    "lora_alpha": "use --peft_config '{\"alpha\": A}' (with --peft lora)",
    "lora_dropout": "use --peft_config '{\"dropout\": P}' (with --peft lora)",
    "lora_load": "use --adapter_init PATH to start from a saved adapter",
    "lora_parts": "use --train_parts (ln, time, emb, head) to train more than the adapter",
    "PISSA": "RWKV-PEFT's old PiSSA switch: use --peft pissa --peft_config '{\"r\": 8}'",
    "svd_niter": "use --peft_config '{\"svd_niter\": N}' (with --peft pissa)",
    "pissa_load": "use --adapter_init PATH to start from a saved adapter",
    "pissa_init": "not needed: rwkvft computes the PiSSA init from the base model each run",
    "LISA": "LISA left RWKV-PEFT in 2024; use --peft miss (or lora)",
    "lisa_r": "LISA left RWKV-PEFT in 2024; use --peft miss (or lora)",
    "lisa_k": "LISA left RWKV-PEFT in 2024; use --peft miss (or lora)",
    "emb": "use --train_parts emb to train the embedding too",
    "state_tune": "use --peft state",
    "dataset_get": "use --dataload get",
    "rwkv_version": "not needed: the version is read from the checkpoint (--my_testing checks it)",
    "my_qa_mask": "use --loss_mask qa (train on the assistant's tokens only)",
    "mask_id": "se masks are not supported; use chat records with --loss_mask qa",
    "weight_decay_final": "not supported (it crashes in RWKV-PEFT); the decay stays --weight_decay",
    "optim": "rwkvft trains with AdamW: --beta1 --beta2 --adam_eps --weight_decay",
    "optimizer": "rwkvft trains with AdamW: --beta1 --beta2 --adam_eps --weight_decay",
    "merge": "use --merge_output PATH for the merged model at the end, or `rwkvft merge` later",
    "fla": "RWKV-PEFT replaced it with --op fla (rwkvft picks the op itself: --op auto)",
    "sft_split": "use --data_split (the Hugging Face split to read, e.g. train[:1000])",
    "compile": "rwkvft runs its own kernels (--op auto); there is no torch.compile switch",
}


def pointer(flag: str, values: list[str]) -> str:
    """Where an RWKV-PEFT flag's meaning went ('' for a flag that is not one of them)."""
    name = flag.lstrip("-")
    if name in _CONFIG_FLAGS:
        return f"--{name} is RWKV-PEFT's; here: {_translate(name, values[0] if values else '')}"
    if name in POINTERS:
        return f"--{name} is {_LEGACY}: {POINTERS[name]}"
    return ""


def _translate(name: str, text: str) -> str:
    method, keys = _CONFIG_FLAGS[name]
    try:
        given = json.loads(text) if text else {}
    except ValueError:
        given = {}
    ours, start = {}, ""
    for k, v in (given.items() if isinstance(given, dict) else ()):
        if k.endswith("_load") or k == "load":
            start = f" --adapter_init {v}" if v else ""
        elif keys.get(k):
            ours[keys[k]] = v
    from ..adapters import registry
    conf = json.dumps(ours or {"r": getattr(registry.get(method), "default_r", None) or 8})
    return f"--peft {method} --peft_config '{conf}'{start}"


def did_you_mean(flag: str, known: list[str]) -> str:
    """' (did you mean --x?)' for a near miss of a known flag, else ''."""
    close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
    return f"; did you mean {close[0]}?" if close else ""


def unknown_flags(extra: list[str], known: list[str], command: str | None) -> list[str]:
    """One line per unknown flag in argparse's leftovers (a flag and the values after it)."""
    lines, i = [], 0
    where = f"`rwkvft {command} --help`" if command else "`rwkvft --help`"
    while i < len(extra):
        token, i = extra[i], i + 1
        values = []
        while i < len(extra) and not extra[i].startswith("--"):
            values.append(extra[i])
            i += 1
        if not token.startswith("-"):
            lines.append(f"unexpected argument {token!r} (see {where})")
            continue
        flag = token.split("=", 1)[0]
        if "=" in token:
            values.insert(0, token.split("=", 1)[1])
        lines.append(pointer(flag, values) or
                     f"unknown flag {flag}{did_you_mean(flag, known)} (see {where})")
    return lines
