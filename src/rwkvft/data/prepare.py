"""`rwkvft prepare`: jsonl / plain text -> PREFIX.bin + PREFIX.idx (uint16 binidx, World tokenizer).

- jsonl: one document per valid record (text, chat or prompt/response; see formats.py), rendered
  to text. binidx has no room for a loss mask, so roles are flattened: train on the .jsonl itself
  to use `--loss_mask qa`.
- plain text: one document per file.
- Every document ends with the EOD token 0 unless eod=False (`--no_eod`).
- Malformed records are skipped and counted; more than max_bad_fraction of them, or no valid
  record at all, is an error (and nothing is written).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..utils import bar_disabled, require_file, same_file
from .binidx import BinIdxWriter, strip_suffix
from .formats import Roles
from .pipeline import CHUNK_BYTES, Options, Stats, check_records, _jsonl_task, _text_task, default_workers, jsonl_tasks, run_tasks, text_tasks

JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass
class PrepareSummary:
    stats: Stats
    seconds: float
    bin_path: Path
    idx_path: Path
    longest: int

    def text(self) -> str:
        s = self.stats
        rate = s.tokens / max(self.seconds, 1e-9)
        lines = [
            f"documents: {s.docs}   tokens: {s.tokens}   longest document: {self.longest} tokens",
            f"skipped records: {s.skipped_text()}",
            f"time: {self.seconds:.2f} s   ({rate / 1e6:.2f} M tokens/s)",
            f"wrote {self.bin_path} and {self.idx_path}",
            f"train with: --data_file {strip_suffix(self.bin_path)} --data_type binidx",
        ]
        if s.roles_docs:
            lines.append(f"note: {s.roles_docs} chat / prompt-response records were flattened to text "
                         f"(binidx keeps no loss mask); train on the .jsonl directly for --loss_mask qa")
        return "\n".join(lines)


def file_format(path: Path, fmt: str) -> str:
    if fmt == "auto":
        return "jsonl" if path.suffix.lower() in JSONL_SUFFIXES else "text"
    if fmt not in ("jsonl", "text"):
        raise UserError(f"unknown --format {fmt!r}; use auto, jsonl or text")
    return fmt


def check_paths(inputs, output: str, force: bool) -> list[Path]:
    if not inputs:
        raise UserError("no input files; pass --input FILE [FILE ...]")
    paths = [require_file(p, "input file") for p in inputs]
    for p in paths:
        if p.stat().st_size == 0:
            raise UserError(f"input file is empty: {p}")
    for out in (Path(output + ".bin"), Path(output + ".idx")):
        if any(same_file(p, out) for p in paths):
            raise UserError(f"output {out} is one of the inputs; choose another --output prefix")
        if out.exists() and not force:
            raise UserError(f"{out} already exists; pass --force to overwrite it or choose another --output")
    return paths


def _tasks(paths, formats, opts):
    for p, fmt in zip(paths, formats):
        if fmt == "jsonl":
            yield from ((_jsonl_task, t) for t in jsonl_tasks(p, opts))
        else:
            yield from ((_text_task, t) for t in text_tasks(p, opts))


def _call(pair):
    fn, task = pair
    return fn(task)


def tokenize_to(writer: BinIdxWriter, paths, formats, opts: Options, workers: int, progress: bool) -> tuple[Stats, int]:
    """Stream every input through the worker pool into the writer; returns (stats, longest doc)."""
    from tqdm import tqdm
    stats, pending, longest = Stats(), 0, 0
    total = sum(p.stat().st_size for p in paths)
    start = time.perf_counter()
    with tqdm(total=total, unit="B", unit_scale=True, disable=bar_disabled(progress), desc="prepare") as bar:
        for chunk in run_tasks(_call, _tasks(paths, formats, opts), workers):
            sizes = chunk.sizes
            if chunk.text_block:  # a file's document may span several blocks
                pending += len(chunk.tokens)
                sizes = np.asarray([pending] if chunk.ends_doc else [], dtype=np.int64)
                pending = 0 if chunk.ends_doc else pending
                chunk.sizes = sizes
                chunk.records = int(chunk.ends_doc)
            writer.add(chunk.tokens, sizes)
            stats.add(chunk)
            longest = max([longest, *sizes.tolist()]) if len(sizes) else longest
            bar.update(chunk.n_bytes)
            rate = stats.tokens / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(docs=stats.docs, tok_s=f"{rate / 1e6:.2f}M", refresh=False)
    return stats, longest


def prepare(inputs, output: str, *, eod: bool = True, workers: int = 0, text_field: str = "text",
            fmt: str = "auto", max_bad_fraction: float = 0.01, force: bool = False,
            roles: Roles = Roles(), progress: bool = True) -> PrepareSummary:
    output = strip_suffix(output)
    paths = check_paths(inputs, output, force)
    formats = [file_format(p, fmt) for p in paths]
    opts = Options(roles=roles, text_field=text_field, eod=eod, want_mask=False)
    start = time.perf_counter()
    writer = BinIdxWriter(output)
    try:
        # a pool costs about a second to start; small inputs are faster in this process
        small = sum(p.stat().st_size for p in paths) < 2 * CHUNK_BYTES
        stats, longest = tokenize_to(writer, paths, formats, opts, 1 if small else default_workers(workers), progress)
        check_records(stats, max_bad_fraction, ", ".join(str(p) for p in paths))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return PrepareSummary(stats, time.perf_counter() - start, writer.bin_path, writer.idx_path, longest)
