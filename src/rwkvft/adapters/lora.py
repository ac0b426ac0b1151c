"""LoRA: y = W x + scale * B A dropout(x), A (r, in) kaiming-uniform(a=sqrt 5), B (out, r) zeros.

scale = lora_alpha / r. Merge: W + scale * B A (fp32). PiSSA (pissa.py) reuses this layer with
scale 1 and SVD-initialised factors.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UserError
from .base import AdaptedLinear, new_fp32
from .config import AdapterConfig, dropout, number
from .method import LinearMethod


def lora_delta(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """Dense update (out, in) = scale * B @ A, in fp32."""
    return (b.float() @ a.float()) * scale


class LoraLinear(AdaptedLinear):
    adapter_param_names = ("lora_A", "lora_B")

    def __init__(self, base: nn.Linear, r: int, scale: float, dropout: float = 0.0):
        super().__init__(base)
        self.r, self.scale = r, float(scale)
        self.lora_A = nn.Parameter(new_fp32((r, self.in_features), self.weight))
        self.lora_B = nn.Parameter(new_fp32((self.out_features, r), self.weight))
        # Same init as HF peft / RWKV-PEFT: B = 0 makes the layer start as the base layer.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def adapter_forward(self, x32: torch.Tensor) -> torch.Tensor:
        return (self.dropout(x32) @ self.lora_A.float().t() @ self.lora_B.float().t()) * self.scale

    def merged_weight(self, sign: int = 1) -> torch.Tensor:
        parts = {"lora_A": self.lora_A.detach(), "lora_B": self.lora_B.detach()}
        return apply_delta(self.dequantized_weight().float(), parts,
                           {"alpha": self.scale * self.r}, sign)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, scale={self.scale:g}"


# ---------------------------------------------------------------- the method record
def parse_options(d: dict) -> dict:
    return {"alpha": number(d, ("lora_alpha", "alpha"), 32.0, 1e-12, math.inf),
            "dropout": dropout(d, ("lora_dropout", "dropout"))}


def make_layer(linear: nn.Linear, name: str, cfg: AdapterConfig) -> LoraLinear:
    return LoraLinear(linear, cfg.r, cfg.scale, cfg.dropout)


def fits(parts: dict, out_f: int, in_f: int, config: dict) -> bool:
    a, b = parts["lora_A"], parts["lora_B"]
    return a.dim() == 2 and b.dim() == 2 and a.shape[1] == in_f and b.shape == (out_f, a.shape[0])


def apply_delta(w: torch.Tensor, parts: dict, config: dict, sign: int = 1) -> torch.Tensor:
    """W +/- alpha/r B A (fp32); the layer and checkpoint.merge share it."""
    alpha = config.get("alpha")
    if alpha is None:
        raise UserError("this LoRA adapter has no alpha (RWKV-PEFT files do not store it); "
                        "pass --lora_alpha with the value used for training")
    a = parts["lora_A"]
    return w + sign * lora_delta(a, parts["lora_B"], float(alpha) / a.shape[0])


METHOD = LinearMethod(
    name="lora", default_r=8,
    keys={"lora_alpha": 32.0, "alpha": 32.0, "lora_dropout": 0.0, "dropout": 0.0},
    options=parse_options, make_layer=make_layer, suffixes=("lora_A", "lora_B"), fits=fits,
    apply_delta=apply_delta, summary="LoRA: W + alpha/r B A, A (r, in), B (out, r)",
).method()
