"""Parallel tokenization of jsonl / plain-text files into token chunks (used by prepare and the readers).

The main process cuts files into byte ranges of whole lines (jsonl; the workers read the ranges
themselves) or blocks of text (plain files); a pool of forked workers parses, renders and
tokenizes each one and returns flat numpy arrays (tokens, per-document sizes, per-token trained
mask), which come back in file order. Inputs under 4 MB run in the calling process, because
starting a pool costs about a second.

Tokens of a record are the concatenation of its segments tokenized one by one, so a prompt/response
boundary is always a token boundary and the loss mask matches the response exactly. This can
differ from tokenizing the rendered string in one piece where a token would span the boundary.

Plain text is one document per file. A big file is split for the workers only just before a
newline that is followed by a byte other than space/tab/CR/LF: no World token contains such a
pair, so the split never changes the tokens.
"""
from __future__ import annotations

import contextlib
import gc
import itertools
import json
import multiprocessing as mp
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError
from .formats import RecordError, Roles, record_segments
from .tokenizer import EOD

CHUNK_BYTES = 1 << 21
_SAFE_SPLIT = re.compile(r"\n(?=[^\n\r\t ])")


@dataclass(frozen=True)
class Options:
    roles: Roles = Roles()
    text_field: str = "text"
    sft_field: tuple[str, str] | None = None
    eod: bool = True
    encoding: str = "utf-8"  # plain text only
    want_mask: bool = True   # return the per-token loss mask (training readers need it)


@dataclass
class Chunk:
    tokens: np.ndarray            # uint16, documents end to end
    sizes: np.ndarray             # int64 tokens per document
    mask: np.ndarray              # uint8 per token: 1 = trained
    n_bytes: int = 0
    roles_docs: int = 0           # documents that had roles (chat / prompt-response)
    bad: list = field(default_factory=list)   # (line number, reason)
    blank: int = 0
    records: int = 0              # non-blank lines / records seen
    text_block: bool = False      # a block of a plain-text document (sizes filled by the caller)
    ends_doc: bool = True         # False for a plain-text block that its file continues


@dataclass
class Stats:
    docs: int = 0
    tokens: int = 0
    records: int = 0
    blank: int = 0
    roles_docs: int = 0
    bad: int = 0
    reasons: Counter = field(default_factory=Counter)
    first_bad: list = field(default_factory=list)
    notes: list = field(default_factory=list)   # how the file was read, for the data summary

    def add(self, c: Chunk) -> None:
        self.docs += len(c.sizes)
        self.tokens += len(c.tokens)
        self.records += c.records
        self.blank += c.blank
        self.roles_docs += c.roles_docs
        self.bad += len(c.bad)
        self.reasons.update(reason for _, reason in c.bad)
        self.first_bad += [ln for ln, _ in c.bad][: max(0, 5 - len(self.first_bad))]

    def why_text(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in self.reasons.most_common(4))
        return f"{why}; first at line {', '.join(str(x) for x in self.first_bad)}"

    def skipped_text(self) -> str:
        return f"{self.bad} ({self.why_text()})" if self.bad else "none"


def check_records(stats: Stats, max_bad_fraction: float, what: str) -> None:
    """No valid record, or too many malformed ones, is an error (the user's data needs fixing)."""
    if stats.docs == 0:
        detail = f"; skipped {stats.skipped_text()}" if stats.bad else ""
        raise UserError(f"no valid record in {what}{detail}")
    if stats.records and stats.bad / stats.records > max_bad_fraction:
        raise UserError(f"{stats.bad} of {stats.records} records in {what} are malformed "
                        f"({stats.why_text()}), more than max_bad_fraction={max_bad_fraction}; "
                        f"fix them or raise --max_bad_fraction")


_TOKENIZER = None


def _tokenizer():
    # one Rust tokenizer per process, built on first use inside the worker
    global _TOKENIZER
    if _TOKENIZER is None:
        from .tokenizer import WorldTokenizer
        _TOKENIZER = WorldTokenizer()
    return _TOKENIZER


def _flatten(ids: list[list[int]], total: int) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(ids), dtype=np.uint16, count=total)


def _parse_lines(first_line: int, lines: list[bytes], opts: Options, chunk: Chunk):
    """-> list of (segments, has_roles) for the good records; bad ones go into chunk.bad."""
    good = []
    for n, raw in enumerate(lines, start=first_line):
        if not raw.strip():
            chunk.blank += 1
            continue
        chunk.records += 1
        try:
            record = json.loads(raw)
        except UnicodeDecodeError:
            chunk.bad.append((n, "invalid UTF-8"))
            continue
        except ValueError:
            chunk.bad.append((n, "invalid JSON"))
            continue
        try:
            good.append(record_segments(record, opts.roles, opts.text_field, opts.sft_field))
        except RecordError as e:
            chunk.bad.append((n, str(e)))
    return good


def encode_records(parsed, eod: bool, chunk: Chunk) -> None:
    """Tokenize segment lists into chunk.tokens/sizes/mask."""
    flat = [text for segs, _ in parsed for text, _ in segs]
    ids = _tokenizer().encode_each(flat)  # not encode_batch: it hangs in forked workers
    pieces, flags, lengths, sizes, pos = [], [], [], [], 0
    for segs, has_roles in parsed:
        doc = ids[pos:pos + len(segs)] + ([[EOD]] if eod else [])
        # the EOD after the last turn is trained: it is how the model learns to stop
        doc_flags = [trained for _, trained in segs] + ([True] if eod else [])
        pos += len(segs)
        pieces += doc
        flags += doc_flags
        lengths += [len(x) for x in doc]
        sizes.append(sum(len(x) for x in doc))
        chunk.roles_docs += int(has_roles)
    chunk.tokens = _flatten(pieces, sum(sizes))
    chunk.sizes = np.asarray(sizes, dtype=np.int64)
    chunk.mask = np.repeat(np.asarray(flags, dtype=np.uint8), np.asarray(lengths, dtype=np.int64))


@contextlib.contextmanager
def _no_gc():
    """Tokenizing makes millions of small lists; the cyclic GC would rescan them again and again
    (a third of the run time) although they hold no cycles."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _jsonl_task(task) -> Chunk:
    """Read and tokenize one byte range of whole lines (the worker reads the file itself, so the
    main process never pickles the input text)."""
    path, offset, size, first_line, opts = task
    with open(path, "rb") as f:
        f.seek(offset)
        lines = f.read(size).split(b"\n")  # only "\n" ends a line, as in the line numbering
    if lines and not lines[-1]:
        lines.pop()
    chunk = Chunk(np.zeros(0, np.uint16), np.zeros(0, np.int64), np.zeros(0, np.uint8), n_bytes=size)
    with _no_gc():
        parsed = _parse_lines(first_line, lines, opts, chunk)
        encode_records(parsed, opts.eod, chunk)
    if not opts.want_mask:
        chunk.mask = np.zeros(0, np.uint8)  # prepare has no use for it: do not ship it back
    return chunk


def _text_task(task) -> Chunk:
    """One block of a plain-text document; `last` says whether the EOD goes after it."""
    text, n_bytes, last, opts = task
    with _no_gc():
        ids = _tokenizer().encode(text)
    if last and opts.eod:
        ids.append(EOD)
    tokens = np.asarray(ids, dtype=np.uint16)
    return Chunk(tokens, np.zeros(0, np.int64), np.ones(len(tokens), np.uint8), n_bytes=n_bytes,
                 text_block=True, ends_doc=last)


def jsonl_tasks(path, opts: Options, chunk_bytes: int | None = None):
    """(path, offset, size, first line number, opts) per range of whole lines of about chunk_bytes."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    with open(path, "rb") as f:
        offset, line_no = 0, 1
        while True:
            block = f.read(chunk_bytes)
            if not block:
                return
            if not block.endswith(b"\n"):
                block += f.readline()  # finish the last line
            yield str(path), offset, len(block), line_no, opts
            offset += len(block)
            line_no += block.count(b"\n")


def text_tasks(path, opts: Options, chunk_bytes: int | None = None):
    raw = open(path, "rb").read()
    try:
        text = raw.decode(opts.encoding)
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not valid {opts.encoding} text (bad byte at offset {e.start}); "
                        f"convert it or pick the right --data_type / --format") from None
    text = text.lstrip("\ufeff")
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    per_char = len(raw) / max(len(text), 1)  # progress counts bytes without re-encoding
    blocks, start = [], 0
    while start < len(text):
        m = _SAFE_SPLIT.search(text, start + chunk_bytes) if start + chunk_bytes < len(text) else None
        end = m.start() + 1 if m else len(text)
        blocks.append(text[start:end])
        start = end
    for i, block in enumerate(blocks):
        yield block, int(len(block) * per_char), i == len(blocks) - 1, opts


def run_tasks(fn, tasks, workers: int):
    """Map fn over tasks in order, in `workers` processes (1 = in this process)."""
    if workers <= 1:
        yield from map(fn, tasks)
        return
    # fork: workers need only numpy + the tokenizer, and start instantly; building the
    # tokenizer (about 1 s) before forking lets every worker inherit it
    fork = sys.platform.startswith("linux")
    if fork:
        _tokenizer()
    ctx = mp.get_context("fork" if fork else "spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(fn, tasks)


def default_workers(workers: int) -> int:
    return workers if workers > 0 else (os.cpu_count() or 1)
