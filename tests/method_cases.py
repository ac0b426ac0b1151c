"""The shared method-case table: one row per PEFT method configuration.

tests/adapters/test_methods.py runs every row through injection, identity at init, HF peft parity
(where HF peft has the method), merge and unmerge, and layer selection. A new method adds a
row here (see docs/internals.md, "Adding a PEFT method").

Columns:
  id, method, peft_config
  hf:      (peft config class name, its kwargs, {our local tensor: HF parameter path}) or None
           when HF peft has no such method (bat_in is RWKV-PEFT's variant; none is no adapter)
  linear:  True when the method wraps Linears (adapter tensors per target layer)
  exact_unmerge: unmerge gives the base back to fp32 rounding (bat's solve is not exact)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    peft_config: dict
    hf: tuple | None
    linear: bool = True
    exact_unmerge: bool = True

    def __str__(self) -> str:
        return self.id


_MISS = {"miss": "miss_block.default"}
_LORA = {"lora_A": "lora_A.default.weight", "lora_B": "lora_B.default.weight"}

CASES = [
    Case("miss", "miss", {"r": 8}, ("MissConfig", {"r": 8, "init_weights": True}, _MISS)),
    Case("miss-r12-padded", "miss", {"r": 12}, ("MissConfig", {"r": 12, "init_weights": True}, _MISS)),
    Case("miss-bat", "miss", {"r": 16, "mode": "bat"},
         ("MissConfig", {"r": 16, "init_weights": "bat"}, _MISS), exact_unmerge=False),
    Case("miss-bat_in", "miss", {"r": 8, "mode": "bat_in"}, None, exact_unmerge=False),
    Case("miss-mini", "miss", {"r": 8, "mode": "mini", "mini_r": 16},
         ("MissConfig", {"r": 8, "init_weights": "mini", "mini_r": 16}, _MISS)),
    Case("lora", "lora", {"r": 4, "lora_alpha": 16},
         ("LoraConfig", {"r": 4, "lora_alpha": 16, "lora_dropout": 0.0}, _LORA)),
    # PiSSA's layer is LoRA (scale 1) on the residual base W - B0 A0
    Case("pissa", "pissa", {"r": 4}, ("LoraConfig", {"r": 4, "lora_alpha": 4, "lora_dropout": 0.0}, _LORA)),
    Case("none", "none", {}, None, linear=False),
]

ADAPTER_CASES = [c for c in CASES if c.linear]
