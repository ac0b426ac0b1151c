"""Batches of samples of different lengths: dynamic padding and length grouping.

Dynamic padding. A pad-mode micro-batch is padded to its own longest sample, rounded up to
`kernels.SEQ_MULTIPLE` (the GPU WKV kernels then take it as it is) but never past ctx_len, so
ctx_len is a cap, not the size of every sample. The padding sits after the real tokens of a
causal model and has mask 0, so the loss and every gradient are those of padding to ctx_len;
only the wasted positions go.

Length grouping (--group_by_length). Each pass over the samples is reordered so that the
`micro_bsz` samples of one micro-batch have similar lengths: the pass's seeded permutation is
cut into spans of GROUP_SPAN micro-batches, each span is sorted by length and cut into
micro-batches, and the micro-batches of the whole pass are shuffled (so lengths do not trend
through an epoch). Sample g of the run is placed by `grouped_position`, which maps the
DataLoader's layout (DistributedSampler without shuffling: rank r takes samples r, r+W, ...)
onto whole micro-batches of that stream, so every rank's micro-batch is one group, ranks stay
disjoint, a pass still holds every sample once, and all of it is a pure function of
(seed, epoch, index): resuming gives the same batches.
"""
from __future__ import annotations

import numpy as np
import torch

from ..kernels import SEQ_MULTIPLE

# micro-batches per sorted span: enough neighbours of similar length that padding nearly
# vanishes (a few % on chat-like data), few enough that batch composition varies between passes
GROUP_SPAN = 64


def padded_length(longest: int, ctx_len: int) -> int:
    """Time steps of a batch whose longest sample has `longest` tokens."""
    rounded = -(-longest // SEQ_MULTIPLE) * SEQ_MULTIPLE
    return max(longest, min(rounded, ctx_len))


def collate(samples: list[dict], length: int) -> dict:
    """Stack samples (dicts of 1-D input_ids/targets/mask) into (B, length) tensors, padding
    with token 0 and mask 0 after each sample's real tokens; `real_tokens` counts the rest."""
    batch = {}
    for key in ("input_ids", "targets", "mask"):
        rows = [s[key] for s in samples]
        out = torch.zeros((len(rows), length), dtype=rows[0].dtype)
        for i, row in enumerate(rows):
            out[i, :len(row)] = row
        batch[key] = out
    batch["real_tokens"] = torch.tensor(sum(len(s["input_ids"]) for s in samples), dtype=torch.long)
    return batch


def length_groups(lengths: np.ndarray, micro_bsz: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(len(lengths)) whose consecutive micro_bsz-blocks hold samples of
    similar length, the blocks in random order (the n % micro_bsz left over come last)."""
    n = len(lengths)
    order = rng.permutation(n)
    span = micro_bsz * GROUP_SPAN
    for s in range(0, n, span):  # stable sort: equal lengths keep their random order
        chunk = order[s:s + span]
        order[s:s + span] = chunk[np.argsort(lengths[chunk], kind="stable")]
    full = n - n % micro_bsz
    blocks = order[:full].reshape(-1, micro_bsz)[rng.permutation(full // micro_bsz)]
    return np.concatenate([blocks.reshape(-1), order[full:]])


def grouped_position(g: int, micro_bsz: int, world_size: int) -> int:
    """Position in the stream of micro-batches of sample number g: the samples one rank's
    DataLoader puts in one micro-batch (g = step*B*W + j*W + rank) become B consecutive ones."""
    step, within = divmod(g, micro_bsz * world_size)
    j, rank = divmod(within, world_size)
    return (step * world_size + rank) * micro_bsz + j
