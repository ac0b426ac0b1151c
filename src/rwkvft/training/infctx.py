"""infctx: train on long samples in chunks, carrying the RNN state (`--train_type infctx`).

RWKV is an RNN: a sample of T tokens fed as consecutive chunks of `chunk_ctx` tokens, each
starting from the state the previous chunk ended with, gives exactly the one-pass outputs. What
the state must hold is read off the models: per layer the token-shift inputs of the time mix and
the channel mix and the WKV state, i.e. the `(att_shift, wkv, ffn_shift)` tuples that
`model.forward_features(idx, state)` takes and returns. RWKV-7's value residual (`v_first`)
needs no carrying: it is layer 0's value *at the same token*, so a chunk computes it from its
own layer 0, whose token shift is in the carried state.

Each chunk (blocks + head + masked cross-entropy) runs under a non-reentrant activation
checkpoint: the forward keeps only the chunk's inputs (token ids, targets, mask and the state
entering it), and the backward recomputes one chunk at a time, so activation memory follows
chunk_ctx, not T, plus one state per chunk.

Gradient modes (`--infctx_bptt`):
- full: the carried states stay in the graph, so gradients flow back through every chunk
  boundary and the gradient equals the unchunked one. Same memory and compute as truncated
  (both recompute each chunk once), hence the default.
- truncated: the state is detached between chunks (RWKV-PEFT's infctx); a chunk's loss then
  does not train how earlier chunks shaped the state.

The loss is the token-weighted mean over the whole sample, as unchunked: the chunk sums of
masked token losses are added and divided once by the sample's mask total. Targets and mask
are sliced with the same indices as the inputs, so pad/qa/sft masks line up across chunk
boundaries. The last chunk is the remainder (T need not be a multiple of chunk_ctx); nothing
is padded. The first chunk passes state=None, which a model with a trainable initial state
(state tuning) reads as "start from my own state".
"""
from __future__ import annotations

import ctypes
import functools

import torch
from torch.utils.checkpoint import checkpoint

from .loss import masked_lm_loss


def chunk_len(cfg) -> int:
    """The chunk length a config asks for (TrainConfig or BenchConfig), 0 = one pass."""
    return cfg.chunk_ctx if getattr(cfg, "train_type", "none") == "infctx" else 0


def lm_loss(model, input_ids, targets, mask, head_chunk: int, chunk_ctx: int = 0,
            bptt: str = "full") -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of masked token losses, number of masked-in tokens) for a (B, T) batch: in one
    pass (chunk_ctx 0, or T <= chunk_ctx), else in chunks carrying the state."""
    if chunk_ctx <= 0 or input_ids.shape[1] <= chunk_ctx:
        h, _ = model.forward_features(input_ids)
        return masked_lm_loss(model.head, h, targets, mask, chunk=head_chunk)
    return infctx_loss(model, input_ids, targets, mask, chunk_ctx, bptt, head_chunk)


def detach_state(state):
    """The same state with no history: gradients stop here."""
    return [tuple(t.detach() for t in layer) for layer in state]


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):
        return None


def release_freed_host_memory() -> None:
    """Give the pages in glibc's free lists back to the system.

    Each chunk frees its activations, but glibc's heap, fragmented by what every chunk keeps
    (its state and graph), reuses them badly: on CPU, peak RSS grew with the sample (0.1B,
    chunk 512: 4.5 GiB at 1k tokens, 19.9 GiB at 16k) while the memory in use stayed flat.
    Trimming before each chunk keeps it flat (4.0 and 4.3 GiB) and costs nothing measurable.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _chunk(model, head_chunk, idx, targets, mask, state):
    if idx.device.type == "cpu":  # runs again for each chunk's recompute in the backward
        release_freed_host_memory()
    h, new_state = model.forward_features(idx, state)
    loss_sum, _ = masked_lm_loss(model.head, h, targets, mask, chunk=head_chunk, grad_now=False)
    # the token shifts are views x[:, -1] of whole (B, T, C) activations: kept as they are, the
    # carried states would hold every chunk's activations alive (memory growing with T again)
    return loss_sum, [tuple(t.clone() for t in layer) for layer in new_state]


def infctx_loss(model, input_ids, targets, mask, chunk_ctx: int, bptt: str = "full",
                head_chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked `lm_loss`: same (sum, count) as one pass; with bptt="full" the same gradients."""
    if bptt not in ("full", "truncated"):
        raise ValueError(f"bptt must be 'full' or 'truncated', got {bptt!r}")
    # outside autograd (evaluation) there is nothing to recompute, so no checkpoint
    use_cp = torch.is_grad_enabled()
    total, state = None, None
    for s in range(0, input_ids.shape[1], chunk_ctx):
        part = (input_ids[:, s:s + chunk_ctx], targets[:, s:s + chunk_ctx], mask[:, s:s + chunk_ctx])
        if state is not None and bptt == "truncated":
            state = detach_state(state)
        if use_cp:
            loss_sum, state = checkpoint(_chunk, model, head_chunk, *part, state, use_reentrant=False)
        else:
            loss_sum, state = _chunk(model, head_chunk, *part, state)
        total = loss_sum if total is None else total + loss_sum
    return total, mask.float().sum()


def batch_loss(model, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
               chunk: int = 2048, chunk_ctx: int = 0, bptt: str = "full") -> torch.Tensor:
    """The training step's loss: the token-weighted mean of masked_lm_loss over the batch, in
    one pass or (chunk_ctx > 0, --train_type infctx) in chunks carrying the state. The
    Lightning module and `rwkvft bench` both compute their step through this function."""
    loss_sum, count = lm_loss(model, inputs, targets, mask, chunk, chunk_ctx, bptt)
    return loss_sum / count.clamp(min=1)
