"""Training samples: epochs, --dataload modes and loss masks.

Epoch. One epoch is exactly `epoch_steps x micro_bsz x world_size` samples, i.e. `epoch_steps`
optimizer micro-steps on every GPU, whatever the size of the data. `len(dataset)` is that number;
the trainer splits it with DistributedSampler(shuffle=False), so rank r takes samples r, r+W, ...
and no two ranks ever draw the same one. Sample i of epoch e is a pure function of
(random_seed, e, i) (`dataset.set_epoch(e)`), so a run is reproducible and resumes exactly.
Samples are numbered globally (g = e x len + i); modes that walk through the data (pad, only,
pack, get with window_sampling="cover") continue where the previous epoch stopped, and start a
new pass with a new seeded shuffle when a pass ends: every document / window is seen once per
pass, none twice. `dataset.summary()` says how many samples one pass takes, so epoch_steps can be
set to cover the data exactly.

Each sample is {"input_ids", "targets", "mask"} of length T (input = tokens[0:T], targets =
tokens[1:T+1]): T = ctx_len in get/pack, the sample's own length (<= ctx_len) in pad/only;
`dataset.collate` makes the DataLoader's batches (adding `real_tokens`, the count of non-padding
positions). loss = sum(ce x mask) / sum(mask).

Modes (--dataload):
- get: a window of ctx_len+1 tokens from the token stream of all documents end to end, crossing
  document boundaries (RWKV-LM). window_sampling="random" (default): a uniformly random start
  per sample. window_sampling="cover": the stream is cut into windows starting at 0, T, 2T, ...
  (neighbours share one token so every token is a target once) visited in a seeded random order,
  each exactly once per pass.
- pad: one document per sample, in a seeded random order per pass. ctx_len is a cap, not a size:
  samples keep their own length and `collate` pads a micro-batch with 0 (mask 0) to its longest
  sample, rounded up to kernels.SEQ_MULTIPLE, never past ctx_len (see data/collate.py; with
  group_by_length, micro-batches hold samples of similar length). Documents longer than
  ctx_len+1 tokens are split into pieces of ctx_len+1 tokens that overlap by one token
  (long_docs="split", default: nothing is lost) or cut after ctx_len+1 tokens
  (long_docs="truncate", as RWKV-PEFT does); summary() reports how many.
- only: like pad but unpadded (samples have their own length), so micro_bsz must be 1.
- pack: documents in a seeded random order per pass, end to end, each followed by EOD (0)
  unless it already ends with one, cut into consecutive ctx_len+1 windows (sharing one token).
  No padding, no wasted compute; the RNN state carries across documents inside a sample.

Loss masks (--loss_mask): "auto" (default) is "qa" when the data has records with roles and "none"
otherwise; summary() says which. "none" and "pad" both train every real token (padding never counts).
"qa" trains only response tokens (assistant turns, the response of prompt/response records, the
EOD after them) of records that have roles; text records in the same file are trained fully.
Only jsonl, sft and hf data have roles: qa on other data types is an error. sft always uses qa.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from ..kernels import SEQ_MULTIPLE
from .collate import collate, grouped_position, length_groups, padded_length
from .formats import Roles
from .templates import TEMPLATES
from .readers import DATA_TYPES, Corpus, ReadOptions, read_corpus
from .tokenizer import EOD, VOCAB_SIZE

DATALOADS = ("get", "pad", "only", "pack")
LOSS_MASKS = ("auto", "none", "pad", "qa")


@dataclass
class DataConfig:
    data_file: str = ""
    data_type: str = "binidx"
    ctx_len: int = 1024
    vocab_size: int = 0           # 0: the trainer resolves it from the checkpoint; 0 here = 65536
    micro_bsz: int = 1
    epoch_steps: int = 1000
    dataload: str = "pad"         # get | pad | only | pack
    loss_mask: str = "auto"       # auto | none | pad | qa
    random_seed: int = -1         # < 0 means 0: the data order is always deterministic
    sft_field: tuple[str, str] | None = None   # (prompt column, response column)
    user_role: str = "User"
    assistant_role: str = "Assistant"
    system_role: str = "System"
    chat_template: str = "g1"     # data/templates: g1 | world | raw
    train_on_think: bool = True
    data_split: str = "train"     # Hugging Face datasets (data_type hf)
    data_config: str = ""
    text_field: str = "text"
    max_bad_fraction: float = 0.01
    window_sampling: str = "random"  # get mode: random | cover (every window once per pass)
    long_docs: str = "split"      # pad/only: split | truncate documents longer than ctx_len+1
    append_eod: bool = True       # jsonl/sft/text: end each document with EOD (0), like prepare
    tokenize_workers: int = 0     # processes for tokenizing jsonl/text (0 = all cores)
    group_by_length: bool = False  # pad: micro-batches of samples of similar length
    progress: bool = False

    def validate(self) -> None:
        _choice("data_type", self.data_type, DATA_TYPES)
        _choice("dataload", self.dataload, DATALOADS)
        if self.loss_mask == "se":
            raise UserError("loss_mask 'se' is not supported; use 'qa' with user_role/assistant_role, or chat records")
        _choice("loss_mask", self.loss_mask, LOSS_MASKS)
        _choice("chat_template", self.chat_template, tuple(TEMPLATES))
        _choice("window_sampling", self.window_sampling, ("random", "cover"))
        _choice("long_docs", self.long_docs, ("split", "truncate"))
        for name in ("ctx_len", "micro_bsz", "epoch_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size < 0:
            raise UserError(f"vocab_size must be >= 0 (0 = from the checkpoint), got {self.vocab_size}")
        if self.dataload == "only" and self.micro_bsz != 1:
            raise UserError(f"dataload 'only' gives samples of different lengths, so micro_bsz must be 1 "
                            f"(got {self.micro_bsz}); use dataload 'pad' or 'pack' for bigger batches")
        if self.group_by_length and self.dataload != "pad":
            raise UserError(f"group_by_length groups samples of different lengths into batches, which "
                            f"only dataload 'pad' makes (got {self.dataload!r}); use --dataload pad or "
                            f"drop --group_by_length")
        if self.sft_field is not None and len(self.sft_field) != 2:
            raise UserError(f"sft_field needs exactly two names (prompt response), got {list(self.sft_field)}")


def responses_only(cfg: DataConfig, corpus: Corpus) -> bool:
    """Whether only response tokens are trained: qa, sft, or auto on records with roles."""
    auto = cfg.loss_mask == "auto" and corpus.mask is not None
    return cfg.loss_mask == "qa" or cfg.data_type == "sft" or auto


def trained_mask(cfg: DataConfig, corpus: Corpus):
    """The per-token loss mask of `corpus` under cfg (None = every real token is trained)."""
    return corpus.mask if responses_only(cfg, corpus) else None


def loss_mask_note(cfg: DataConfig, corpus: Corpus) -> str:
    """The run log's line saying which tokens carry loss (what --loss_mask auto chose)."""
    how = "responses only (assistant turns and their EOD; plain-text records fully)" \
        if responses_only(cfg, corpus) and corpus.mask is not None else "every real token"
    chose = f"auto -> {'qa' if corpus.mask is not None else 'none'}" if cfg.loss_mask == "auto" else cfg.loss_mask
    return f"loss_mask {chose}: trains {how}"


def _choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise UserError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")


class _PassOrder:
    """Seeded permutation of n items for each pass over the data (cached: pure function of seed, pass).
    `make(rng)` builds it (default: a uniform permutation)."""

    def __init__(self, seed: int, n: int, salt: int, make=None):
        self.seed, self.n, self.salt, self.make, self._cache = seed, n, salt, make, {}

    def __call__(self, p: int) -> np.ndarray:
        if p not in self._cache:
            if len(self._cache) > 2:
                self._cache.clear()
            rng = np.random.default_rng([self.seed, self.salt, p])
            self._cache[p] = rng.permutation(self.n) if self.make is None else self.make(rng)
        return self._cache[p]

    def item(self, g: int) -> int:
        p, k = divmod(g, self.n)
        return int(self(p)[k])


def make_sample(window: np.ndarray, tmask: np.ndarray | None) -> dict:
    """ctx+1 tokens -> input/target/mask tensors; mask of target t = tmask[t+1] (1 when None)."""
    x = torch.from_numpy(np.array(window[:-1], dtype=np.int64))  # copies: the corpus may be a read-only mmap
    y = torch.from_numpy(np.array(window[1:], dtype=np.int64))
    m = torch.ones(len(x)) if tmask is None else torch.from_numpy(np.array(tmask[1:], dtype=np.float32))
    return {"input_ids": x, "targets": y, "mask": m}


class RWKVDataset(Dataset):
    """Base: epoch bookkeeping. Subclasses implement `_draw(i, g)` -> sample dict."""

    def __init__(self, cfg: DataConfig, corpus: Corpus, world_size: int):
        self.cfg, self.corpus, self.T = cfg, corpus, cfg.ctx_len
        self.length = cfg.epoch_steps * cfg.micro_bsz * world_size
        self.world_size = world_size
        self.seed = max(cfg.random_seed, 0)
        self.epoch = 0
        self.tmask = trained_mask(cfg, corpus)
        self.notes: list[str] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.length:
            raise IndexError(f"sample {i} out of range 0..{self.length - 1}")
        return self._draw(int(i), self.epoch * self.length + int(i))

    def collate(self, samples: list[dict]) -> dict:
        """The DataLoader's collate_fn: samples of one length stacked as they are."""
        return collate(samples, max(len(s["input_ids"]) for s in samples))

    def _window(self, start: int, count: int) -> dict:
        end = start + count
        m = None if self.tmask is None else self.tmask[start:end]
        return make_sample(np.asarray(self.corpus.tokens[start:end]), m)

    def samples_per_pass(self) -> int:
        raise NotImplementedError

    def summary(self) -> str:
        c, per = self.corpus, self.samples_per_pass()
        batch = self.cfg.micro_bsz * self.world_size
        lines = [f"data: {c.source} ({self.cfg.data_type}): {c.n_docs} documents, {len(c.tokens)} tokens",
                 f"dataload {self.cfg.dataload}: one pass over the data = {per} samples = "
                 f"{-(-per // batch)} steps of {batch}; one epoch = {self.length} samples"]
        lines.append(loss_mask_note(self.cfg, c))
        if c.stats.bad:
            lines.append(f"skipped records: {c.stats.skipped_text()}")
        return "\n".join(lines + c.stats.notes + self.notes)


class WindowDataset(RWKVDataset):
    """get: ctx_len+1 token windows over the whole stream (random starts, or every slot once per pass)."""

    def __init__(self, cfg, corpus, world_size):
        super().__init__(cfg, corpus, world_size)
        self.N = len(corpus.tokens)
        if self.N < self.T + 1:
            raise UserError(f"the data has {self.N} tokens, fewer than ctx_len+1 = {self.T + 1}; lower --ctx_len")
        self.order = _PassOrder(self.seed, (self.N - 1) // self.T, salt=1)

    def samples_per_pass(self) -> int:
        return self.order.n

    def _draw(self, i, g):
        if self.cfg.window_sampling == "cover":
            start = self.order.item(g) * self.T
        else:
            start = int(np.random.default_rng([self.seed, 0, self.epoch, i]).integers(0, self.N - self.T))
        return self._window(start, self.T + 1)


def document_units(offsets: np.ndarray, T: int, split: bool):
    """(starts, lengths, n_long) of the training units made from documents (<= T+1 tokens each)."""
    starts, lengths = offsets[:-1], np.diff(offsets)
    long = lengths > T + 1
    if not split:
        return starts, np.minimum(lengths, T + 1), int(long.sum())
    pieces = np.where(long, -(-(lengths - 1) // T), 1)
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    j = np.arange(int(pieces.sum())) - first          # piece number inside its document
    rep_start, rep_len = np.repeat(starts, pieces), np.repeat(lengths, pieces)
    return rep_start + j * T, np.minimum(T + 1, rep_len - j * T), int(long.sum())


class DocDataset(RWKVDataset):
    """pad / only: one document (or piece of one) per sample."""

    def __init__(self, cfg, corpus, world_size):
        super().__init__(cfg, corpus, world_size)
        starts, lengths, n_long = document_units(corpus.offsets, self.T, cfg.long_docs == "split")
        keep = lengths >= 2  # a sample needs one input and one target
        self.starts, self.lengths = starts[keep], lengths[keep]
        self.longest = int(np.diff(corpus.offsets).max()) if corpus.n_docs else 0
        if not len(self.starts):
            raise UserError(f"no document in {corpus.source} has 2 or more tokens; nothing to train on")
        if cfg.group_by_length:
            self.order = _PassOrder(self.seed, len(self.starts), salt=4,  # partial: picklable for workers
                                    make=functools.partial(length_groups, self.lengths, cfg.micro_bsz))
        else:
            self.order = _PassOrder(self.seed, len(self.starts), salt=2)
        self._notes(n_long, int((~keep).sum()))
        self.notes.append(self._cap_note())

    def _cap_note(self) -> str:
        longest = int(self.lengths.max()) - 1
        if self.cfg.dataload == "only":
            return f"ctx_len {self.T} is a cap: the longest sample has {longest} tokens; samples are not padded"
        how = "hold samples of similar length (--group_by_length) and " if self.cfg.group_by_length else ""
        return (f"ctx_len {self.T} is a cap: the longest document has {self.longest} tokens, the longest "
                f"sample {longest}; batches {how}are padded to their longest sample, rounded up to a "
                f"multiple of {SEQ_MULTIPLE}: at most {padded_length(longest, self.T)} positions")

    def _notes(self, n_long: int, n_short: int) -> None:
        if n_long and self.cfg.long_docs == "split":
            extra = len(self.starts) + n_short - self.corpus.n_docs
            self.notes.append(f"{n_long} documents longer than ctx_len+1 = {self.T + 1} tokens were split "
                              f"({extra} extra samples)")
        elif n_long:
            lengths = np.diff(self.corpus.offsets)
            lost = int(np.maximum(lengths - (self.T + 1), 0).sum())
            self.notes.append(f"{n_long} documents longer than ctx_len+1 = {self.T + 1} tokens were truncated "
                              f"({lost} tokens dropped)")
        if n_short:
            self.notes.append(f"{n_short} documents with fewer than 2 tokens were skipped")

    def samples_per_pass(self) -> int:
        return self.order.n

    def collate(self, samples: list[dict]) -> dict:
        if self.cfg.dataload == "only":
            return super().collate(samples)
        return collate(samples, padded_length(max(len(s["input_ids"]) for s in samples), self.T))

    def _draw(self, i, g):
        if self.cfg.group_by_length:  # whole micro-batches are groups of the pass's stream
            g = grouped_position(g, self.cfg.micro_bsz, self.world_size)
        u = self.order.item(g)
        start, n = int(self.starts[u]), int(self.lengths[u])
        end = start + n
        m = None if self.tmask is None else self.tmask[start:end]
        return make_sample(np.asarray(self.corpus.tokens[start:end]), m)


class PackDataset(RWKVDataset):
    """pack: shuffled documents end to end (EOD-separated), cut into consecutive windows."""

    def __init__(self, cfg, corpus, world_size):
        super().__init__(cfg, corpus, world_size)
        lengths = np.diff(corpus.offsets)
        last = np.asarray(corpus.tokens[np.maximum(corpus.offsets[1:] - 1, 0)])
        self.sep = (lengths > 0) & (last != EOD)      # add an EOD after this document
        self.packed = lengths + self.sep
        self.pass_len = int(self.packed.sum())
        if self.pass_len < self.T + 1:
            raise UserError(f"the data has {self.pass_len} tokens, fewer than ctx_len+1 = {self.T + 1}; lower --ctx_len")
        self.order = _PassOrder(self.seed, corpus.n_docs, salt=3)
        self._cum = {}

    def samples_per_pass(self) -> int:
        return -(-(self.pass_len - 1) // self.T)

    def _pass(self, p: int):
        if p not in self._cum:
            if len(self._cum) > 2:
                self._cum.clear()
            order = self.order(p)
            self._cum[p] = (order, np.concatenate([[0], np.cumsum(self.packed[order])]))
        return self._cum[p]

    def _doc(self, d: int):
        s, e = self.corpus.offsets[d], self.corpus.offsets[d + 1]
        tok = np.asarray(self.corpus.tokens[s:e], dtype=np.int64)
        m = None if self.tmask is None else self.tmask[s:e]
        if self.sep[d]:
            tok = np.append(tok, EOD)
            m = None if m is None else np.append(m, 1)
        return tok, m

    def _draw(self, i, g):
        x, need, toks, masks = g * self.T, self.T + 1, [], []
        while need:
            p, pos = divmod(x, self.pass_len)
            order, cum = self._pass(p)
            k = int(np.searchsorted(cum, pos, side="right")) - 1
            tok, m = self._doc(int(order[k]))
            within = pos - int(cum[k])
            take = min(need, len(tok) - within)
            toks.append(tok[within:within + take])
            masks.append(None if m is None else m[within:within + take])
            x, need = x + take, need - take
        mask = None if self.tmask is None else np.concatenate(masks)
        return make_sample(np.concatenate(toks), mask)


def read_data(cfg: DataConfig, rank: int = 0) -> Corpus:
    """Read cfg.data_file as training reads it (tokenizer, EOD, roles and mask checks)."""
    cfg.validate()
    vocab = cfg.vocab_size or VOCAB_SIZE
    roles = Roles(cfg.user_role, cfg.assistant_role, cfg.system_role, cfg.chat_template, cfg.train_on_think)
    opts = ReadOptions(cfg.data_file, cfg.data_type, roles, cfg.text_field,
                       tuple(cfg.sft_field) if cfg.sft_field else None, cfg.append_eod,
                       cfg.max_bad_fraction, cfg.tokenize_workers, cfg.ctx_len, cfg.progress and rank == 0,
                       cfg.data_split, cfg.data_config)
    corpus = read_corpus(opts, vocab)
    if (cfg.loss_mask == "qa" or cfg.data_type == "sft") and corpus.mask is None:
        raise UserError(f"loss_mask qa needs records with roles (chat messages or prompt/response), and "
                        f"{corpus.source} ({cfg.data_type}) has none; use jsonl/sft data or --loss_mask none")
    return corpus


def dataset_from_corpus(cfg: DataConfig, corpus: Corpus, world_size: int = 1) -> RWKVDataset:
    """The map-style dataset for cfg.dataload over an already read corpus."""
    cls = {"get": WindowDataset, "pad": DocDataset, "only": DocDataset, "pack": PackDataset}[cfg.dataload]
    return cls(cfg, corpus, world_size)


def build_dataset(cfg: DataConfig, rank: int = 0, world_size: int = 1) -> RWKVDataset:
    """Read cfg.data_file and return the map-style dataset for cfg.dataload (see module docstring)."""
    cfg.validate()
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"bad rank {rank} / world_size {world_size}")
    return dataset_from_corpus(cfg, read_data(cfg, rank), world_size)
