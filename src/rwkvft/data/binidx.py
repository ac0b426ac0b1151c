"""Megatron-style binidx token files, the format RWKV-LM and RWKV-PEFT read (as the RWKV-PEFT feature notes describe it).

`PREFIX.idx` (little-endian):
    9-byte magic b"MMIDIDX\\x00\\x00" | u64 version = 1 | u8 dtype code | u64 n (sequences)
    | u64 doc_count | int32 sizes[n] | int64 pointers[n] (byte offsets into .bin)
    | int64 doc_idx[doc_count]  (sequence index where each document starts, 0-prefixed)
`PREFIX.bin`: the tokens of every sequence, concatenated, in the dtype of the code.

We write one sequence per document (doc_idx = 0, 1, ..., n) in uint16 (code 8), which holds every
World token id (< 65536). The reader accepts every integer dtype code so files from
json2binidx (int32) also load.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..utils import atomic_path

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}
FLOAT_CODES = (6, 7)
UINT16_CODE = 8
_HEADER = len(MAGIC) + 8 + 1 + 8 + 8


def strip_suffix(prefix: str | os.PathLike) -> str:
    """Users often pass `data.bin` or `data.idx`; the prefix is what both share."""
    s = str(prefix)
    return s[:-4] if s.endswith((".bin", ".idx")) else s


def index_bytes(sizes: np.ndarray, code: int = UINT16_CODE) -> bytes:
    """The complete .idx content for sequences of `sizes` tokens, one document each."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = len(sizes)
    itemsize = np.dtype(DTYPES[code]).itemsize
    pointers = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(sizes[:-1] * itemsize, out=pointers[1:])
    header = (MAGIC + VERSION.to_bytes(8, "little") + bytes([code])
              + n.to_bytes(8, "little") + (n + 1).to_bytes(8, "little"))
    doc_idx = np.arange(n + 1, dtype="<i8")
    return header + sizes.astype("<i4").tobytes() + pointers.astype("<i8").tobytes() + doc_idx.tobytes()


class BinIdxWriter:
    """Streams token chunks into PREFIX.bin and writes PREFIX.idx on success.

    Both files appear only when `close()` runs after every chunk was written: they are built as
    temp files and renamed, so a crash leaves neither half-written nor a mismatched pair.
    """

    def __init__(self, prefix: str | os.PathLike):
        self.bin_path = Path(str(prefix) + ".bin")
        self.idx_path = Path(str(prefix) + ".idx")
        self._bin_ctx = atomic_path(self.bin_path)
        self._idx_ctx = atomic_path(self.idx_path)
        self._bin_tmp = self._bin_ctx.__enter__()
        self._idx_tmp = self._idx_ctx.__enter__()
        self._f = open(self._bin_tmp, "wb")
        self._sizes: list[np.ndarray] = []
        self.n_tokens = 0

    def add(self, tokens: np.ndarray, sizes: np.ndarray) -> None:
        """Append documents: `tokens` holds them end to end, `sizes` their lengths."""
        tokens = np.asarray(tokens)
        if len(tokens) and int(tokens.max()) > 65535:
            raise UserError(f"token id {int(tokens.max())} does not fit the uint16 binidx format (ids must be < 65536)")
        self._f.write(tokens.astype("<u2", copy=False).tobytes())
        self._sizes.append(np.asarray(sizes, dtype=np.int64))
        self.n_tokens += len(tokens)

    def close(self) -> None:
        self._f.close()
        sizes = np.concatenate(self._sizes) if self._sizes else np.zeros(0, np.int64)
        if len(sizes) and sizes.max() > np.iinfo(np.int32).max:
            raise UserError("a document has more than 2^31 tokens; split it before preparing")
        self._idx_tmp.write_bytes(index_bytes(sizes))
        # .bin first: a reader that finds the new .idx always finds its .bin already in place
        self._bin_ctx.__exit__(None, None, None)
        self._idx_ctx.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop both temp files; existing outputs stay untouched."""
        self._f.close()
        err = RuntimeError("aborted")
        for ctx in (self._bin_ctx, self._idx_ctx):
            try:
                ctx.__exit__(RuntimeError, err, None)
            except RuntimeError:
                pass


class BinIdx:
    """Read-only view of a binidx pair: `tokens` (flat memmap), `offsets` (n+1 token offsets)."""

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = strip_suffix(prefix)
        self.bin_path, self.idx_path = Path(self.prefix + ".bin"), Path(self.prefix + ".idx")
        for p in (self.idx_path, self.bin_path):
            if not p.is_file():
                raise UserError(f"binidx file not found: {p} (pass the prefix without .bin/.idx, "
                                f"or create it with `rwkvft prepare`)")
        self.code, sizes, pointers = self._read_index()
        self.dtype = np.dtype(DTYPES[self.code])
        self.sizes = sizes
        self.offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        self._check_bin(pointers)
        n = int(self.offsets[-1])
        self.tokens = (np.memmap(self.bin_path, dtype=self.dtype, mode="r", shape=(n,))
                       if n else np.zeros(0, self.dtype))

    def _read_index(self):
        raw = self.idx_path.read_bytes()
        name = self.idx_path
        if len(raw) < _HEADER or raw[:9] != MAGIC:
            raise UserError(f"{name} is not a binidx index (bad magic); re-create it with `rwkvft prepare`")
        version = int.from_bytes(raw[9:17], "little")
        code = raw[17]
        n = int.from_bytes(raw[18:26], "little")
        doc_count = int.from_bytes(raw[26:34], "little")
        if version != VERSION:
            raise UserError(f"{name} has binidx version {version}, only version 1 is supported")
        if code in FLOAT_CODES or code not in DTYPES:
            raise UserError(f"{name} has dtype code {code}; token files must use an integer dtype (8 = uint16)")
        expected = _HEADER + 4 * n + 8 * n + 8 * doc_count
        if len(raw) != expected:
            raise UserError(f"{name} is {len(raw)} bytes but its header describes {expected}; "
                            f"the file is truncated or corrupt, re-create it with `rwkvft prepare`")
        sizes = np.frombuffer(raw, dtype="<i4", count=n, offset=_HEADER).astype(np.int64)
        pointers = np.frombuffer(raw, dtype="<i8", count=n, offset=_HEADER + 4 * n)
        if (sizes < 0).any():
            raise UserError(f"{name} lists a negative sequence size; the file is corrupt")
        return code, sizes, pointers

    def _check_bin(self, pointers: np.ndarray) -> None:
        item = self.dtype.itemsize
        want = int(self.offsets[-1]) * item
        have = self.bin_path.stat().st_size
        if have != want:
            raise UserError(f"{self.bin_path} has {have} bytes but {self.idx_path} describes {want}; "
                            f"the .bin and .idx do not belong together, re-create both with `rwkvft prepare`")
        # we read the .bin as one stream, so sequences must lie end to end in order
        if not np.array_equal(pointers, self.offsets[:-1] * item):
            raise UserError(f"{self.idx_path} has sequence pointers that are not contiguous; "
                            f"re-create the pair with `rwkvft prepare`")

    def __len__(self) -> int:
        return len(self.sizes)

    def doc(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

