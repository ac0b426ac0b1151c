"""The shared method-case table: one row per PEFT method configuration.

tests/adapters/test_methods.py runs every row through injection, identity at init, HF peft parity
(where HF peft has the method), merge and unmerge, and layer selection. A new method adds a
row here (see docs/internals.md, "Adding a PEFT method").

Columns:
  id, method, peft_config
  hf:      (peft config class name, its kwargs, {our local tensor: HF parameter path}) or None
           when HF peft has no such method (bat_in is RWKV-PEFT's variant; none is no adapter)
  kind:    "linear" (wraps Linears: adapter tensors per target layer), "full" (a whole model)
           or "state" (an initial WKV state per layer)
  exact_unmerge: unmerge gives the base back to fp32 rounding (bat's solve is not exact)
  exports: the `rwkvft export` formats that must hold the method (every other export format
           must refuse it, by the method's own declaration: tests/formats/test_export_table.py)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rwkvft.adapters import AdaptedLinear, LinearMethod


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    peft_config: dict
    hf: tuple | None
    kind: str = "linear"
    exact_unmerge: bool = True
    exports: frozenset = frozenset({"ai00-lora", "hf", "hf-peft"})

    @property
    def linear(self) -> bool:
        return self.kind == "linear"

    def __str__(self) -> str:
        return self.id


_MISS = {"miss": "miss_block.default"}
_LORA = {"lora_A": "lora_A.default.weight", "lora_B": "lora_B.default.weight"}

CASES = [
    Case("miss", "miss", {"r": 8}, ("MissConfig", {"r": 8, "init_weights": True}, _MISS)),
    Case("miss-r12-padded", "miss", {"r": 12}, ("MissConfig", {"r": 12, "init_weights": True}, _MISS)),
    Case("miss-bat", "miss", {"r": 16, "mode": "bat"},
         ("MissConfig", {"r": 16, "init_weights": "bat"}, _MISS), exact_unmerge=False,
         exports=frozenset({"hf", "hf-peft"})),
    Case("miss-bat_in", "miss", {"r": 8, "mode": "bat_in"}, None, exact_unmerge=False,
         exports=frozenset({"hf"})),
    Case("miss-mini", "miss", {"r": 8, "mode": "mini", "mini_r": 16},
         ("MissConfig", {"r": 8, "init_weights": "mini", "mini_r": 16}, _MISS)),
    Case("lora", "lora", {"r": 4, "lora_alpha": 16},
         ("LoraConfig", {"r": 4, "lora_alpha": 16, "lora_dropout": 0.0}, _LORA)),
    # PiSSA's layer is LoRA (scale 1) on the residual base W - B0 A0
    Case("pissa", "pissa", {"r": 4}, ("LoraConfig", {"r": 4, "lora_alpha": 4, "lora_dropout": 0.0}, _LORA)),
    Case("none", "none", {}, None, kind="full", exports=frozenset({"hf"})),
    Case("state", "state", {}, None, kind="state", exports=frozenset({"runner-state", "ai00-state"})),
]

ADAPTER_CASES = [c for c in CASES if c.linear]


# ---------------------------------------------------------------- a throw-away method
# Registered at test time only (tests/cli/test_methods_cli.py trains it end to end; the
# export table checks that every export format holds it or refuses it by its declaration:
# it declares no low-rank form and no HF peft adapter, so only the merged formats take it).
class RowScaleLinear(AdaptedLinear):
    """W' = (1 + s) * W row by row, s (out,) zero-initialised: a method no source file knows."""
    adapter_param_names = ("rowscale",)

    def __init__(self, base: nn.Linear):
        super().__init__(base)
        self.rowscale = nn.Parameter(torch.zeros(self.out_features))

    def adapter_forward(self, x32):
        return F.linear(x32, self.dequantized_weight().float()) * self.rowscale


def _rowscale_delta(w, parts, config, sign=1):
    s = 1 + parts["rowscale"].float()[:, None]
    return w * s if sign > 0 else w / s


ROWSCALE = LinearMethod(
    name="rowscale", default_r=1, keys={}, options=lambda d: {},
    make_layer=lambda linear, name, cfg: RowScaleLinear(linear), suffixes=("rowscale",),
    fits=lambda parts, out_f, in_f, config: tuple(parts["rowscale"].shape) == (out_f,),
    apply_delta=_rowscale_delta, summary="test-only: per-row scale",
).method()

ROWSCALE_EXPORTS = frozenset({"hf"})
