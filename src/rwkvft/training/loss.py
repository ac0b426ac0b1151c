"""Masked cross-entropy through the output head, in chunks of tokens.

A full (B, T, V) fp32 logits tensor is 2 GiB at B=8, T=1024, V=65536, so head + loss run
`chunk` tokens at a time and only one chunk of logits is ever alive, with the same result as
the one-shot loss. How each chunk's backward is had:
  * frozen head (every adapter method, state tuning): the chunk's gradient with respect to its
    hidden states is computed in the forward, right after its loss, and kept (chunk x C, small);
    the backward only scales it. The logits are made once instead of twice (checkpointing
    recomputed them in the backward): the head matmul is the largest single one of a step
    (0.1B at ctx 256 on CPU: head + CE was 29% of the step, a third of it the recompute).
  * trainable head parameters (full fine-tuning, a head in --train_parts): activation
    checkpointing, which hands their gradients to autograd's own accumulation (and to DDP's
    and DeepSpeed's hooks on them) as for any other parameter.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def _chunk_loss(head, h, targets, mask):
    logits = head(h).float()
    ce = F.cross_entropy(logits, targets, reduction="none")
    return (ce * mask).sum()


class _LossWithGradient(torch.autograd.Function):
    """A loss whose gradient with respect to `h` was computed already: backward scales it."""

    @staticmethod
    def forward(ctx, loss, h, grad_h):
        ctx.grad_h = grad_h   # not an input or output of this node: kept on ctx, freed with it
        return loss.clone()

    @staticmethod
    def backward(ctx, grad_out):
        return None, grad_out * ctx.grad_h, None


def _loss_and_grad(head, h, targets, mask):
    """A chunk's loss, with the gradient of that loss with respect to h computed now."""
    leaf = h.detach().requires_grad_()
    with torch.enable_grad():
        loss = _chunk_loss(head, leaf, targets, mask)
        (grad_h,) = torch.autograd.grad(loss, leaf)
    return _LossWithGradient.apply(loss.detach(), h, grad_h)


def masked_lm_loss(head, h: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                   chunk: int = 2048, grad_now: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (sum of masked token losses, number of masked-in tokens).

    head: module mapping (n, C) -> (n, V); h: (B, T, C); targets: (B, T) long; mask: (B, T) float.
    The mean loss is sum / max(count, 1). grad_now=False where the caller runs under an activation
    checkpoint (infctx's chunks): a backward inside its forward would unpack the checkpoint's saved
    tensors and so recompute the whole chunk right there.
    """
    C = h.shape[-1]
    h2, t2, m2 = h.reshape(-1, C), targets.reshape(-1), mask.reshape(-1).float()
    keep = m2 > 0  # skip padding rows entirely: they cost head FLOPs and add nothing
    if not bool(keep.all()):
        h2, t2, m2 = h2[keep], t2[keep], m2[keep]
    total = h.new_zeros((), dtype=torch.float32)
    head_trains = any(p.requires_grad for p in head.parameters())
    backward = torch.is_grad_enabled() and (h2.requires_grad or head_trains)
    for s in range(0, h2.shape[0], chunk):
        args = (h2[s:s + chunk], t2[s:s + chunk], m2[s:s + chunk])
        if backward and grad_now and not head_trains:
            total = total + _loss_and_grad(head, *args)
        elif backward:
            total = total + checkpoint(_chunk_loss, head, *args, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, *args)
    return total, m2.sum()
