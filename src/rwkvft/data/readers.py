"""One reader per --data_type, each giving a `Corpus`: documents as a flat token array + offsets.

| data_type          | data_file                          | documents                                   |
|--------------------|------------------------------------|---------------------------------------------|
| binidx             | PREFIX (PREFIX.bin + PREFIX.idx)   | one per sequence                            |
| jsonl              | .jsonl                             | one per record (text / chat / prompt-resp.) |
| sft                | local .json (list) / .jsonl / .parquet | one per record; sft_field = [prompt, response] |
| hf                 | save_to_disk folder, .arrow/.csv/... file, Hub org/name (hf_datasets.py) | one per row |
| utf-8, utf-16le    | plain text file                    | the whole file (World tokenizer)            |
| numpy              | .npy integer token array           | 1-D: split after each EOD (0); 2-D: one per row |
| uint16             | raw little-endian uint16 tokens    | split after each EOD (0)                    |
| dummy              | ignored                            | 64 deterministic random-token documents     |

Only jsonl, sft and hf carry roles, so only they have a per-token `mask` (1 = response token).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..utils import bar_disabled, require_file
from .binidx import BinIdx, strip_suffix
from .formats import RecordError, Roles, record_segments
from .pipeline import (Chunk, Options, Stats, _jsonl_task, _text_task, default_workers, encode_records,
                       jsonl_tasks, run_tasks, text_tasks, CHUNK_BYTES, check_records)
from .tokenizer import EOD, VOCAB_SIZE

DATA_TYPES = ("binidx", "jsonl", "sft", "hf", "utf-8", "utf-16le", "numpy", "uint16", "dummy")


@dataclass
class Corpus:
    tokens: np.ndarray            # 1-D integer tokens, documents end to end (may be a memmap)
    offsets: np.ndarray           # int64 (n_docs + 1): document d is tokens[offsets[d]:offsets[d+1]]
    mask: np.ndarray | None = None  # uint8 per token, 1 = trained (response); None = no roles
    source: str = ""
    stats: Stats = field(default_factory=Stats)
    memmap: tuple | None = None   # (path, dtype, count): reopened after pickling, not copied

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.memmap:  # DataLoader workers reopen the file instead of receiving a copy of it
            state["tokens"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.memmap:
            path, dtype, count = self.memmap
            self.tokens = np.memmap(path, dtype=dtype, mode="r", shape=(count,))

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1


@dataclass(frozen=True)
class ReadOptions:
    data_file: str
    data_type: str
    roles: Roles = Roles()
    text_field: str = "text"
    sft_field: tuple[str, str] | None = None
    eod: bool = True
    max_bad_fraction: float = 0.01
    workers: int = 0
    ctx_len: int = 1024           # only sizes the dummy documents
    progress: bool = False
    split: str = "train"          # hf: the dataset split and configuration
    config: str = ""


def _concat(chunks: list[Chunk], source: str, stats: Stats) -> Corpus:
    tokens = np.concatenate([c.tokens for c in chunks]) if chunks else np.zeros(0, np.uint16)
    mask = np.concatenate([c.mask for c in chunks]) if chunks else np.zeros(0, np.uint8)
    sizes = np.concatenate([c.sizes for c in chunks]) if chunks else np.zeros(0, np.int64)
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return Corpus(tokens, offsets, mask if stats.roles_docs else None, source, stats)


def _collect(fn, tasks, workers: int, progress: bool, total: int, what: str) -> tuple[list[Chunk], Stats]:
    from tqdm import tqdm
    chunks, stats = [], Stats()
    with tqdm(total=total, unit="B", unit_scale=True, disable=bar_disabled(progress), desc=f"tokenizing {what}") as bar:
        for c in run_tasks(fn, tasks, workers):
            chunks.append(c)
            stats.add(c)
            bar.update(c.n_bytes)
    return chunks, stats


def _workers(path: Path, workers: int) -> int:
    # a pool costs about a second to start; small files are faster in this process
    return 1 if path.stat().st_size < 2 * CHUNK_BYTES else default_workers(workers)


def _nonempty(path: str, what: str) -> Path:
    p = require_file(path, what)
    if p.stat().st_size == 0:
        raise UserError(f"{what} is empty: {p}")
    return p


def read_jsonl(o: ReadOptions) -> Corpus:
    p = _nonempty(o.data_file, "data_file")
    from .sniff import sniff
    if sniff(p) == "json array":   # `[{...}, {...}]`: one JSON document, not one record a line
        corpus = read_record_list(_load_records(p), o, str(p))
        corpus.stats.notes.append(f"{p.name} is one JSON array, not JSON Lines: its "
                                  f"{corpus.stats.records} elements were read as records")
        return corpus
    opts = Options(o.roles, o.text_field, o.sft_field, o.eod)
    chunks, stats = _collect(_jsonl_task, jsonl_tasks(p, opts), _workers(p, o.workers),
                             o.progress, p.stat().st_size, p.name)
    check_records(stats, o.max_bad_fraction, str(p))
    return _concat(chunks, str(p), stats)


def _load_records(p: Path) -> list:
    if p.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq
        try:
            return pq.read_table(p).to_pylist()
        except Exception as e:  # pyarrow raises several types for damaged files
            raise UserError(f"cannot read parquet file {p}: {str(e).splitlines()[0]}") from None
    try:
        data = json.loads(p.read_bytes())
    except ValueError as e:
        raise UserError(f"{p} is not valid JSON ({e}); a JSON file holds one list of records "
                        f"[{{...}}, ...], a JSON Lines file one record per line") from None
    if not isinstance(data, list):
        raise UserError(f"{p} must hold a JSON list of records, found {type(data).__name__}")
    return data


def read_sft(o: ReadOptions) -> Corpus:
    """Local json / jsonl / parquet; loss only on the response (sft_field = [prompt, response])."""
    if not Path(o.data_file).exists():
        raise UserError(f"sft data_file not found: {o.data_file} (sft reads local .json/.jsonl/.parquet "
                        f"files; --data_type hf reads Hugging Face datasets)")
    p = _nonempty(o.data_file, "data_file")
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        return read_jsonl(o)
    return read_record_list(_load_records(p), o, str(p))


def read_hf(o: ReadOptions) -> Corpus:
    """A Hugging Face dataset (folder, data file or Hub name): its rows are records, as in jsonl."""
    from .hf_datasets import load_records
    return read_record_list(load_records(o.data_file, o.split, o.config), o, o.data_file)


def read_record_list(records, o: ReadOptions, source: str) -> Corpus:
    """Parsed records (dicts) -> Corpus, in this process (record n is the n-th, from 1)."""
    stats, chunk = Stats(), Chunk(np.zeros(0, np.uint16), np.zeros(0, np.int64), np.zeros(0, np.uint8))
    parsed = []
    for n, rec in enumerate(records, start=1):
        chunk.records += 1
        try:
            parsed.append(record_segments(rec, o.roles, o.text_field, o.sft_field))
        except RecordError as e:
            chunk.bad.append((n, str(e)))
    encode_records(parsed, o.eod, chunk)
    stats.add(chunk)
    check_records(stats, o.max_bad_fraction, source)
    return _concat([chunk], source, stats)


def read_text(o: ReadOptions, encoding: str) -> Corpus:
    p = _nonempty(o.data_file, "data_file")
    opts = Options(eod=o.eod, encoding=encoding)
    chunks, _ = _collect(_text_task, text_tasks(p, opts), _workers(p, o.workers),
                         o.progress, p.stat().st_size, p.name)
    tokens = np.concatenate([c.tokens for c in chunks])
    stats = Stats(docs=1, tokens=len(tokens), records=1)
    return Corpus(tokens, np.array([0, len(tokens)], dtype=np.int64), None, str(p), stats)


def split_at_eod(tokens: np.ndarray) -> np.ndarray:
    """Offsets of documents that each end with an EOD (the last may not)."""
    ends = np.flatnonzero(tokens == EOD) + 1
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    if offsets[-1] != len(tokens):
        offsets = np.append(offsets, len(tokens))
    return offsets


def read_numpy(o: ReadOptions) -> Corpus:
    p = _nonempty(o.data_file, "data_file")
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UserError(f"{p} is not a .npy array file ({e})") from None
    if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2):
        raise UserError(f"{p} holds a {arr.ndim}-D {arr.dtype} array; numpy data must be a 1-D or 2-D integer token array")
    if arr.ndim == 2:  # one document per row
        offsets = np.arange(arr.shape[0] + 1, dtype=np.int64) * arr.shape[1]
        return Corpus(np.ascontiguousarray(arr).reshape(-1), offsets, None, str(p), Stats(docs=arr.shape[0]))
    return Corpus(arr, split_at_eod(arr), None, str(p))


def read_uint16(o: ReadOptions) -> Corpus:
    p = _nonempty(o.data_file, "data_file")
    size = p.stat().st_size
    if size % 2:
        raise UserError(f"{p} has an odd number of bytes ({size}); a uint16 token file holds 2 bytes per token")
    tokens = np.memmap(p, dtype="<u2", mode="r", shape=(size // 2,))
    return Corpus(tokens, split_at_eod(tokens), None, str(p), memmap=(str(p), "<u2", size // 2))


def read_binidx(o: ReadOptions) -> Corpus:
    from .sniff import sniff
    kind = sniff(o.data_file) if Path(o.data_file).is_file() else ""
    if kind in ("jsonl", "json array", "npy"):   # a data file of another format
        right = "numpy" if kind == "npy" else "jsonl"
        raise UserError(f"--data_type binidx reads PREFIX.bin + PREFIX.idx, but {o.data_file} looks "
                        f"like {'a NumPy array' if kind == 'npy' else 'JSON Lines data'}: use "
                        f"--data_type {right} (or auto)")
    b = BinIdx(strip_suffix(o.data_file))
    memmap = (str(b.bin_path), b.dtype.str, len(b.tokens)) if len(b.tokens) else None
    return Corpus(b.tokens, b.offsets, None, b.prefix, Stats(docs=len(b), tokens=len(b.tokens)), memmap)


def dummy_corpus(ctx_len: int, vocab_size: int, n_docs: int = 64) -> Corpus:
    """Random tokens in deterministic documents of ctx_len/2 .. 2*ctx_len tokens, each ending in EOD."""
    rng = np.random.default_rng(20240501)  # fixed: the data must not change with the training seed
    lengths = rng.integers(max(2, ctx_len // 2), 2 * ctx_len + 2, size=n_docs)
    tokens = rng.integers(1, min(vocab_size, VOCAB_SIZE), size=int(lengths.sum())).astype(np.uint16)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens[offsets[1:] - 1] = EOD
    return Corpus(tokens, offsets, None, "dummy", Stats(docs=n_docs, tokens=len(tokens)))


def read_corpus(o: ReadOptions, vocab_size: int) -> Corpus:
    if o.data_type not in DATA_TYPES:
        raise UserError(f"unknown data_type {o.data_type!r}; use one of {', '.join(DATA_TYPES)}")
    if o.data_type == "dummy":
        return dummy_corpus(o.ctx_len, vocab_size)
    if not o.data_file:
        raise UserError(f"no data_file given for data_type {o.data_type}; pass --data_file")
    readers = {"binidx": read_binidx, "jsonl": read_jsonl, "sft": read_sft, "hf": read_hf, "numpy": read_numpy,
               "uint16": read_uint16, "utf-8": lambda x: read_text(x, "utf-8"),
               "utf-16le": lambda x: read_text(x, "utf-16-le")}
    corpus = readers[o.data_type](o)
    check_vocab(corpus, vocab_size)
    return corpus


def check_vocab(corpus: Corpus, vocab_size: int) -> None:
    """Every id must index the embedding: 0 <= id < vocab_size."""
    t = corpus.tokens
    if len(t) == 0:
        raise UserError(f"{corpus.source} holds no tokens; check the file")
    if t.dtype == np.uint16 and vocab_size >= 65536:
        return  # cannot exceed; skip a full read of a large memmap
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= vocab_size:
        bad = hi if hi >= vocab_size else lo
        raise UserError(f"token id {bad} in {corpus.source} is outside the vocabulary (0..{vocab_size - 1}); "
                        f"the data was tokenized for another vocabulary, or --vocab_size is wrong")
