"""LoRA: y = W x + scale * B A dropout(x), A (r, in) kaiming-uniform(a=sqrt 5), B (out, r) zeros.

scale = lora_alpha / r. Merge: W + scale * B A (fp32). PiSSA (pissa.py) reuses this layer with
scale 1 and SVD-initialised factors.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import AdaptedLinear, new_fp32


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
        return (self.dropout(x32) @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    def merged_weight(self, sign: int = 1) -> torch.Tensor:
        delta = lora_delta(self.lora_A.detach(), self.lora_B.detach(), self.scale)
        return self.dequantized_weight().float() + sign * delta

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, scale={self.scale:g}"
