"""Masked cross-entropy through the output head, in chunks of tokens.

A full (B, T, V) fp32 logits tensor is 2 GiB at B=8, T=1024, V=65536. Computing head + loss
for `chunk` tokens at a time under activation checkpointing keeps only one chunk of logits
alive in forward and in backward, with the same result as the one-shot loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _chunk_loss(head, h, targets, mask):
    logits = head(h).float()
    ce = F.cross_entropy(logits, targets, reduction="none")
    return (ce * mask).sum()


def masked_lm_loss(head, h: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                   chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (sum of masked token losses, number of masked-in tokens).

    head: module mapping (n, C) -> (n, V); h: (B, T, C); targets: (B, T) long; mask: (B, T) float.
    The mean loss is sum / max(count, 1).
    """
    C = h.shape[-1]
    h2, t2, m2 = h.reshape(-1, C), targets.reshape(-1), mask.reshape(-1).float()
    keep = m2 > 0  # skip padding rows entirely: they cost head FLOPs and add nothing
    if not bool(keep.all()):
        h2, t2, m2 = h2[keep], t2[keep], m2[keep]
    total = h.new_zeros((), dtype=torch.float32)
    use_cp = torch.is_grad_enabled() and (h2.requires_grad or any(p.requires_grad for p in head.parameters()))
    for s in range(0, h2.shape[0], chunk):
        args = (h2[s:s + chunk], t2[s:s + chunk], m2[s:s + chunk])
        if use_cp:
            total = total + checkpoint(_chunk_loss, head, *args, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, *args)
    return total, m2.sum()
