"""RWKV World tokenizer (rwkv_vocab_v20230424, vocab 65536).

Encoding uses pyrwkv-tokenizer (Rust, greedy longest-match over UTF-8 bytes; the same ids as
the `rwkv` package's TRIE tokenizer). Decoding goes through our own id -> bytes table, because
the Rust decoder aborts on token sequences that end inside a UTF-8 character, which happens on
every streamed multi-byte character.

Id 0 is the end-of-document token: it is never produced by `encode` and decodes to "".
"""
from __future__ import annotations

import ast
import codecs
from functools import lru_cache
from pathlib import Path

EOD = 0
VOCAB_SIZE = 65536


def _vocab_path() -> Path:
    import pyrwkv_tokenizer
    return Path(pyrwkv_tokenizer.__file__).with_name("rwkv_vocab_v20230424.txt")


@lru_cache(maxsize=1)
def _id_to_bytes() -> tuple[bytes, ...]:
    """Parse `<id> <python literal> <byte length>` lines (the World tokenizer's vocabulary file)."""
    table: list[bytes] = [b""] * VOCAB_SIZE
    with open(_vocab_path(), encoding="utf-8", newline="") as f:
        for line in f.read().split("\n"):
            line = line.rstrip("\r")
            if not line:
                continue
            first, last = line.index(" "), line.rindex(" ")
            idx = int(line[:first])
            lit = ast.literal_eval(line[first + 1:last])
            raw = lit.encode("utf-8") if isinstance(lit, str) else lit
            if len(raw) != int(line[last + 1:]):
                raise ValueError(f"vocab line {idx}: byte length mismatch")
            table[idx] = raw
    return tuple(table)


class WorldTokenizer:
    """encode(str) -> list[int]; decode(ids) -> str (invalid UTF-8 becomes U+FFFD)."""

    vocab_size = VOCAB_SIZE
    eod = EOD

    def __init__(self):
        import pyrwkv_tokenizer
        self._rust = pyrwkv_tokenizer.RWKVTokenizer()

    def encode(self, text: str) -> list[int]:
        return list(self._rust.encode(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Batch encode through the Rust thread pool. Not fork-safe: after a process that has
        called it forks, the same call in the child hangs (the pool's threads are not copied).
        Worker processes use `encode_each`."""
        return [list(x) for x in self._rust.encode_batch(list(texts))]

    def encode_each(self, texts) -> list[list[int]]:
        """Encode texts one by one in this thread: as fast per core, and safe in forked workers."""
        enc = self._rust.encode
        return [enc(t) for t in texts]

    def decode_bytes(self, ids) -> bytes:
        table = _id_to_bytes()
        return b"".join(table[int(i)] for i in ids)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> "StreamDecoder":
        return StreamDecoder(self)


class StreamDecoder:
    """Token-by-token decoding that holds back an incomplete UTF-8 character until it completes."""

    def __init__(self, tokenizer: WorldTokenizer):
        self._tok = tokenizer
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._dec.decode(self._tok.decode_bytes([token_id]))

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)
