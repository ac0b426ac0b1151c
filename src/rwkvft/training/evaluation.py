"""Loss and perplexity on held-out data: one function shared by validation and `rwkvft eval`,
so the number printed during training and the number `rwkvft eval` prints agree by construction.

The evaluation set is a fixed list of samples covering the data once, built from a `Corpus` read
exactly as the training data is read (tokenizer, end-of-document token, loss mask) and cut the way
the training --dataload mode cuts it, but in file order and without sampling:
- pad / only: every document (pieces of ctx_len+1 tokens for long ones, per --long_docs), one per
  sample, padded to ctx_len for pad;
- get: the token stream cut into windows starting at 0, T, 2T, ... (neighbours share one token, so
  every token after the first is a target exactly once); the last window is padded;
- pack: the documents end to end, each followed by an EOD unless it ends with one, cut the same way.
Padding never counts. loss = sum(cross-entropy x mask) / sum(mask) over the whole set.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..data.collate import collate
from ..utils import bar_disabled
from ..data.datasets import document_units, make_sample
from ..data.tokenizer import EOD
from .loss import masked_lm_loss


@dataclass
class EvalResult:
    loss_sum: float
    tokens: int
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.tokens, 1)

    @property
    def ppl(self) -> float:
        return math.exp(min(self.loss, 50.0))  # capped: a diverged model must not overflow

    def as_dict(self) -> dict:
        return {"loss": self.loss, "ppl": self.ppl, "tokens": self.tokens,
                "seconds": round(self.seconds, 3)}


def _stream_windows(tokens: np.ndarray, mask: np.ndarray | None, T: int) -> list[dict]:
    n = len(tokens)
    out = []
    for start in range(0, max(n - 1, 0), T):
        end = min(start + T + 1, n)
        m = None if mask is None else mask[start:end]
        out.append(make_sample(np.asarray(tokens[start:end]), m))
    return out


def _packed(corpus, tmask):
    """Documents in file order, end to end, with an EOD after each that lacks one (as pack does)."""
    toks, masks = [], []
    for d in range(corpus.n_docs):
        s, e = int(corpus.offsets[d]), int(corpus.offsets[d + 1])
        if e == s:
            continue
        t = np.asarray(corpus.tokens[s:e], dtype=np.int64)
        m = None if tmask is None else np.asarray(tmask[s:e])
        if t[-1] != EOD:
            t = np.append(t, EOD)
            m = None if m is None else np.append(m, 1)
        toks.append(t)
        masks.append(m)
    mask = None if tmask is None else np.concatenate(masks)
    return np.concatenate(toks), mask


def eval_samples(corpus, tmask, ctx_len: int, dataload: str, long_docs: str = "split") -> list[dict]:
    """The fixed evaluation samples for `corpus` (see the module docstring)."""
    T = ctx_len
    if dataload in ("pad", "only"):
        starts, lengths, _ = document_units(corpus.offsets, T, long_docs == "split")
        out = []
        for s, n in zip(starts.tolist(), lengths.tolist()):
            if n < 2:
                continue  # no target, as in training
            m = None if tmask is None else tmask[s:s + n]
            out.append(make_sample(np.asarray(corpus.tokens[s:s + n]), m))
        return out
    if dataload == "pack":
        tokens, mask = _packed(corpus, tmask)
        return _stream_windows(tokens, mask, T)
    return _stream_windows(corpus.tokens, tmask, T)


def _batches(samples: list[dict], batch_size: int):
    """batch_size consecutive samples at a time, padded to the longest of them (padding is
    masked out and sits after the real tokens of a causal model: the loss is unchanged)."""
    for i in range(0, len(samples), batch_size):
        batch = samples[i:i + batch_size]
        yield collate(batch, max(len(s["input_ids"]) for s in batch))


@contextlib.contextmanager
def evaluating(model):
    """No gradients, eval mode (adapter dropout off); the previous mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def evaluate(model, samples: list[dict], batch_size: int = 1, head_chunk: int = 2048,
             device=None, forward_context=None, progress: bool = False,
             desc: str = "evaluating") -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of masked token losses, number of masked-in tokens) over `samples`, both float64
    tensors on `device`, so that DDP ranks can add their shares before dividing."""
    from tqdm import tqdm

    device = device or next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    ctx = forward_context or contextlib.nullcontext
    with evaluating(model), tqdm(total=len(samples), disable=bar_disabled(progress), desc=desc,
                                 unit="sample", leave=False) as bar:
        for batch in _batches(samples, batch_size):
            idx, tgt, msk = (batch[k].to(device) for k in ("input_ids", "targets", "mask"))
            with ctx():
                h, _ = model.forward_features(idx)
                s, c = masked_lm_loss(model.head, h, tgt, msk, chunk=head_chunk)
            loss_sum += s.double()
            count += c.double()
            bar.update(len(idx))
    return loss_sum, count
