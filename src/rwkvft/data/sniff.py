"""What a file given in the wrong place looks like, from its first bytes: the hint that turns
"not found" / "not a checkpoint" into "this is JSON Lines data, use --data_type jsonl"."""
from __future__ import annotations

from pathlib import Path

from .binidx import MAGIC, strip_suffix

NPY_MAGIC = b"\x93NUMPY"


def sniff(path) -> str:
    """'binidx', 'json array', 'jsonl', 'npy' or '' (unknown, or no readable file)."""
    p = Path(path)
    prefix = Path(strip_suffix(p))
    if p.suffix.lower() in (".bin", ".idx") and Path(f"{prefix}.idx").is_file():
        if _head(Path(f"{prefix}.idx"), len(MAGIC)) == MAGIC:
            return "binidx"
    head = _head(p, 4096)
    if head.startswith(NPY_MAGIC):
        return "npy"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")   # a UTF-8 BOM, then blanks
    if text.startswith(b"["):
        return "json array"
    if text.startswith(b"{"):
        return "jsonl"
    return ""


def _head(p: Path, n: int) -> bytes:
    try:
        with open(p, "rb") as f:
            return f.read(n)
    except OSError:   # missing, a folder, unreadable: nothing to tell
        return b""


def data_hint(path) -> str:
    """A sentence for a data file passed where a model belongs ('' when it is no data file)."""
    kind = sniff(path)
    if kind == "binidx":
        return (f"{path} is binidx training data (tokens), not a model: train on it with "
                f"--data_file {strip_suffix(path)} --data_type binidx")
    if kind in ("jsonl", "json array"):
        return f"{path} looks like JSON data, not a model: train on it with --data_file {path}"
    if kind == "npy":
        return f"{path} is a NumPy token array, not a model: train on it with --data_file {path} --data_type numpy"
    return ""
