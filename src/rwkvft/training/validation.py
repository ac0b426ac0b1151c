"""Validation during training: the held-out set (--val_file or --val_split) and the evaluator.

--val_split F holds out whole DOCUMENTS (records of jsonl/sft, sequences of binidx, EOD-separated
runs of numpy/uint16 tokens), never windows or pieces, so no held-out token is ever trained on:
the held-out documents are `round(F x documents)` (at least 1) of them, chosen by a permutation
seeded with --random_seed alone; the same file, F and seed always hold out the same documents,
and --resume keeps them out. The training set is the remaining documents, in their file order.

The figure is token-weighted: the sum of masked losses over the sum of masked tokens. Under DDP
each rank evaluates samples rank, rank+W, ... and the ranks add their sums before dividing, so
the result is the mean over all ranks' shares (equal to a one-process evaluation).
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from ..errors import UserError
from .evaluation import EvalResult, eval_samples, evaluate

SPLIT_SALT = 0x5EA1  # seeds the held-out choice apart from the data order (same seed, other stream)


def split_documents(n_docs: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the held-out documents (see the module docstring)."""
    n_val = max(1, int(round(fraction * n_docs)))
    if n_val >= n_docs:
        raise UserError(f"--val_split {fraction} of {n_docs} document(s) leaves nothing to train on; "
                        f"a plain text file is one document: pass --val_file, or use more documents")
    order = np.random.default_rng([max(seed, 0), SPLIT_SALT]).permutation(n_docs)
    return np.sort(order[:n_val])


def subset_corpus(corpus, docs: np.ndarray, label: str):
    """A new in-memory Corpus holding only documents `docs` (in the given order)."""
    from ..data.pipeline import Stats
    from ..data.readers import Corpus

    off = corpus.offsets
    pieces = [np.asarray(corpus.tokens[off[d]:off[d + 1]]) for d in docs.tolist()]
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.uint16)
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in pieces], out=offsets[1:])
    mask = None
    if corpus.mask is not None:
        mask = np.concatenate([corpus.mask[off[d]:off[d + 1]] for d in docs.tolist()])
    stats = replace(corpus.stats, docs=len(docs), tokens=len(tokens))
    return Corpus(tokens, offsets, mask, f"{corpus.source} [{label}]", stats)


def split_corpus(corpus, fraction: float, seed: int):
    """(training corpus, held-out corpus, held-out document indices)."""
    val_docs = split_documents(corpus.n_docs, fraction, seed)
    keep = np.ones(corpus.n_docs, dtype=bool)
    keep[val_docs] = False
    train_docs = np.flatnonzero(keep)
    return (subset_corpus(corpus, train_docs, f"training: {len(train_docs)} documents"),
            subset_corpus(corpus, val_docs, f"validation split: {len(val_docs)} documents"),
            val_docs)


def val_samples_from(corpus, dcfg) -> list[dict]:
    from ..data.datasets import trained_mask
    samples = eval_samples(corpus, trained_mask(dcfg, corpus), dcfg.ctx_len, dcfg.dataload,
                           dcfg.long_docs)
    if not samples:
        raise UserError(f"the validation data {corpus.source} has no sample with a target token; "
                        f"give a larger --val_file or --val_split")
    return samples


class Validator:
    """Runs the shared evaluation on the held-out samples; tracks the best (--save_best)."""

    def __init__(self, samples: list[dict], cfg, runlog, save_best=None):
        self.samples = samples
        self.cfg = cfg
        self.runlog = runlog
        self.save_best = save_best          # () -> Path, rank 0 only; None without --save_best
        self.best_loss = math.inf
        self.best_step = -1
        self.last_step = -1                 # the step of the last evaluation (no double runs)
        self.history: list[dict] = []

    def run(self, trainer, pl_module, step: int, epoch: int) -> EvalResult:
        t0 = time.perf_counter()
        rank, world = trainer.global_rank, trainer.world_size
        s, c = evaluate(pl_module.model, self.samples[rank::world], batch_size=self.cfg.micro_bsz,
                        head_chunk=self.cfg.head_chunk, device=pl_module.device,
                        forward_context=trainer.precision_plugin.forward_context)
        if world > 1:  # each rank holds its share's sums; their sum is the whole set's
            s = trainer.strategy.reduce(s, reduce_op="sum")
            c = trainer.strategy.reduce(c, reduce_op="sum")
        res = EvalResult(float(s), int(round(float(c))), time.perf_counter() - t0)
        self.last_step = step
        self._report(pl_module, res, step, epoch)
        if res.loss < self.best_loss:
            self.best_loss, self.best_step = res.loss, step
            if self.save_best is not None and trainer.is_global_zero:
                path = self.save_best()
                self.runlog.line(f"best: {path.name} is now step {step} (epoch {epoch}), "
                                 f"val loss {res.loss:.4f}")
        return res

    def _report(self, pl_module, res: EvalResult, step: int, epoch: int) -> None:
        row = {"kind": "val", "step": step, "epoch": epoch, **res.as_dict()}
        self.history.append(row)
        self.runlog.record(row)
        self.runlog.say(f"val step {step} epoch {epoch}: loss {res.loss:.4f} ppl {res.ppl:.2f} "
                         f"tokens {res.tokens} time {res.seconds:.2f}s")
        # progress bar and every logger (wandb, TensorBoard) at this global step
        pl_module.log("val_loss", res.loss, prog_bar=True, batch_size=1)
        pl_module.log("val_ppl", res.ppl, prog_bar=False, batch_size=1)

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_step": self.best_step, "last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.best_loss = float(state.get("best_loss", math.inf))
        self.best_step = int(state.get("best_step", -1))
        self.last_step = int(state.get("last_step", -1))


def build_training_and_validation(cfg, dcfg, val_dcfg, world_size: int):
    """(training dataset, validation samples or None) for --val_file / --val_split / neither."""
    from ..data.datasets import dataset_from_corpus, read_data

    corpus = read_data(dcfg)
    if not (cfg.val_file or cfg.val_split):
        return dataset_from_corpus(dcfg, corpus, world_size), None
    if cfg.val_split:
        corpus, val_corpus, _ = split_corpus(corpus, cfg.val_split, cfg.random_seed)
    else:
        try:
            val_corpus = read_data(val_dcfg)
        except UserError as e:
            raise UserError(f"--val_file: {e}") from None
    return dataset_from_corpus(dcfg, corpus, world_size), val_samples_from(val_corpus, dcfg)
