"""Small shared helpers: atomic file writes, path checks."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    A crash (or disk full) leaves the previous file intact and no half-written file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return `path` as a Path if it is an existing regular file, else raise UserError."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p} (check the path)")
    if p.is_dir():
        raise UserError(f"{what} is a directory, expected a file: {p}")
    return p


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if a and b name the same file (b need not exist)."""
    a, b = Path(a), Path(b)
    if b.exists() and a.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


class _DropTips(logging.Filter):
    """Lightning's start-up adverts ("💡 Tip: ... litlogger / litmodels")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


_DROP_TIPS = _DropTips()


def quiet_library_noise() -> None:
    """Hide library messages that are noise to our users on every run (`--debug` keeps them):
    Lightning's litlogger/litmodels tips and its torch pytree LeafSpec deprecation warning."""
    warnings.filterwarnings("ignore", message=re.escape("`isinstance(treespec, LeafSpec)` is deprecated"))
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DROP_TIPS)
