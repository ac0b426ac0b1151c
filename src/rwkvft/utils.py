"""Small shared helpers: atomic file writes, path checks."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
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
    try:
        yield tmp_path
        # After the block, not before: mkstemp makes 0600, and writers that create their file
        # anew (safetensors' save_file does) make 0600 again. Give a normal file's mode.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; it becomes `path` only if the block succeeds.

    An existing `path` (the caller checked --force) is replaced whole, and only after the new
    folder is complete. Modes become those of normal files and folders under the umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = None
    try:
        yield tmp_path
        _normal_modes(tmp_path)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            shutil.rmtree(tmp_path, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _normal_modes(folder: Path) -> None:
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)  # mkdtemp makes 0700
    for p in folder.rglob("*"):
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


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


def is_launched_rank() -> bool:
    """A DDP process other than global rank 0 (Lightning re-runs the command line for them, and
    marks them the way its own rank helper reads). Such a process prints no notes: rank 0 does."""
    return any(os.environ.get(k, "0") not in ("", "0")
               for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"))


def note(text: str) -> None:
    """`rwkvft: note: ...` on stdout, once per run (not again from every DDP rank)."""
    if not is_launched_rank():
        print(f"rwkvft: note: {text}", flush=True)


def bar_disabled(progress: bool):
    """tqdm's `disable=` for a bar the caller wants shown: None lets tqdm turn it off when stderr
    is no terminal (a bar there writes one endless carriage-return line into the log)."""
    return None if progress else True


# Libraries whose warnings are written for their own developers, not for ours (torch's
# deprecations inside Lightning, Lightning's advice on its own settings): `--debug` shows them.
_LIBRARIES = (r"(lightning|lightning_fabric|pytorch_lightning|torch|deepspeed|transformers|peft|"
              r"datasets|bitsandbytes|triton|fla|lm_eval|trl)(\..*)?$")


def quiet_library_noise() -> None:
    """Hide library messages that are noise to our users on every run (`--debug` keeps them):
    the libraries' warnings, Lightning's start-up lines (GPU/TPU available, distributed set-up,
    tips) and its "`Trainer.fit` stopped" line. Our own lines are prints, not logging."""
    warnings.filterwarnings("ignore", message=re.escape("`isinstance(treespec, LeafSpec)` is deprecated"))
    warnings.filterwarnings("ignore", module=_LIBRARIES)
    # Lightning gives its loggers INFO handlers of their own at import; only this global
    # switch keeps their records below WARNING away (rwkvft itself prints, it does not log).
    logging.disable(logging.INFO)
