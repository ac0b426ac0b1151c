"""Architecture description of a checkpoint, read from its tensors (never from user flags)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    version: str          # "x070", "x060", "x052"
    n_layer: int
    n_embd: int
    vocab_size: int
    head_size: int        # N (64 in released models)
    dim_ffn: int
    # RWKV-7 low-rank dims (0 when not applicable)
    d_decay: int = 0      # Dw = att.w1.shape[1]     (v6: time_decay_w1.shape[1])
    d_aaa: int = 0        # Da = att.a1.shape[1]
    d_mv: int = 0         # Dv = blocks.1.att.v1.shape[1]
    d_gate: int = 0       # Dg = att.g1.shape[1]
    d_mix: int = 0        # v6 Dm = time_maa_w1.shape[1] // 5
    layer0_v: bool = True # x070: file has blocks.0.att.v0/v1/v2

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size
