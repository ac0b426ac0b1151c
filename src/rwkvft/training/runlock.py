"""One run per --proj_dir: a lock the kernel drops when the process dies.

`hold(proj)` takes an exclusive `flock` on `proj/.rwkvft-run.lock` and writes our PID into it;
a second `rwkvft train` into the folder (with --overwrite or --resume too) fails at once with
one line naming that PID (`refuse_if_busy` says so from the raw command line, before the slow
imports, so within a second; `hold` is the check that counts). Because the kernel releases a flock when its holder exits, `kill -9`
leaves nothing to clean: the next run takes the lock of the stale file. DDP ranks > 0 never
call `hold` (only rank 0 prepares the folder), and the descriptor is not inherited by the
processes Lightning starts (Python opens files non-inheritable), so a run never trips over
its own lock.

`release(proj)` unlinks the file while still holding it, then closes it; a process that opened
the old file meanwhile sees, after locking, that the path no longer names what it locked and
tries again (`_lock_current`), so two runs can never both think they hold the folder.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from ..errors import UserError

LOCK_NAME = ".rwkvft-run.lock"
_HELD_ERRNOS = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)  # flock: another process holds it
_held: dict[str, int] = {}  # resolved proj_dir -> descriptor holding its lock (this process)


def hold(proj: Path) -> None:
    """Hold `proj` for this process's run; UserError naming the holder when another has it.
    Holding it again from the same process is a no-op (a failed run in-process, then another)."""
    key = str(Path(proj).resolve())
    if key in _held:
        return
    path = Path(key) / LOCK_NAME
    fd = _lock_current(path)
    if fd is None:
        raise UserError(_busy(proj, path))
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[key] = fd


def refuse_if_busy(argv: list[str]) -> None:
    """The same refusal within a second of `rwkvft train` starting: called on the raw command
    line before torch and Lightning are imported (tens of seconds on a loaded machine). Only
    looks; `hold` takes the lock later. A --proj_dir from --config is checked by `hold` alone."""
    proj = next((a.split("=", 1)[1] for a in argv if a.startswith("--proj_dir=")), None)
    if proj is None and "--proj_dir" in argv[:-1]:
        proj = argv[argv.index("--proj_dir") + 1]
    path = Path(proj or "") / LOCK_NAME
    if not proj or _launched_rank() or str(Path(proj).resolve()) in _held or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in _HELD_ERRNOS:
            raise UserError(_busy(proj, path)) from None
        # another failure (no locks on this file system): `hold` reports it
    finally:
        os.close(fd)  # closing drops the probe's shared lock


def _launched_rank() -> bool:
    """A DDP process other than global rank 0: its rank 0 holds the folder."""
    from ..utils import is_launched_rank
    return is_launched_rank()


def _busy(proj, path: Path) -> str:
    return (f"--proj_dir {proj} is in use by another training run ({_holder(path)}); "
            f"wait for it to finish or stop it, or choose another --proj_dir")


def release(proj: Path) -> None:
    """End this process's hold on `proj` (nothing when it holds none)."""
    key = str(Path(proj).resolve())
    fd = _held.pop(key, None)
    if fd is None:
        return
    try:
        os.unlink(Path(key) / LOCK_NAME)
    except OSError:
        pass  # already gone (the folder was removed): the lock ends with the close anyway
    os.close(fd)


def _lock_current(path: Path, tries: int = 5) -> int | None:
    """A descriptor holding the flock of the file now at `path`, or None when another holds it.
    A few quick retries: `refuse_if_busy` of a process starting beside us holds a shared lock
    for an instant, which must not read as a run."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in _HELD_ERRNOS:
                tries -= 1
                if tries <= 0:
                    return None
                time.sleep(0.05)
                continue
            raise UserError(f"cannot lock --proj_dir {path.parent} ({e.strerror}); "
                            f"choose a folder on a local disk") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder released and removed it between our open and lock: retry


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid.isdigit() else "PID not yet recorded"
