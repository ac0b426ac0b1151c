"""Writing a command's --output: our stale temp files from a killed earlier try are removed
first, and a failed write (a full disk) is one line saying the previous output is intact.

Writers go through utils.atomic_path / atomic_dir, which build `.NAME.<random>.tmp` beside the
output and rename it into place (atomic_dir parks a replaced folder in `.NAME.<random>.old`);
`kill -9` leaves those behind, and nobody else writes names of that form for this output.
"""
from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path
from typing import Iterator

from ..errors import UserError


def stale_temps(out: Path) -> list[Path]:
    """Our leftovers for `out`: `.NAME.<8 random>.tmp` files or folders, and `.old` folders once
    `out` exists again (before that, `.old/x` may be the only copy of the previous output)."""
    pattern = re.compile(re.escape(f".{out.name}.") + r"[A-Za-z0-9_]{8}\.(tmp|old)")
    found = []
    for p in sorted(out.parent.iterdir()) if out.parent.is_dir() else []:
        m = pattern.fullmatch(p.name)
        if m and (m.group(1) == "tmp" or (p.is_dir() and out.exists())):
            found.append(p)
    return found


def clean_stale_temps(out: Path) -> list[str]:
    removed = []
    for p in stale_temps(out):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


@contextlib.contextmanager
def writing_output(out: Path) -> Iterator[None]:
    """Around a writer of `out`: clean our stale temps, then turn a failed write into one line."""
    from safetensors import SafetensorError

    from ..training.safety import save_error_text
    clean_stale_temps(out)
    existed = out.exists()
    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as e:  # torch/safetensors report a full disk so
        kept = f"the previous {out} is intact" if existed else f"no {out} was written"
        raise UserError(f"could not write {out}: {save_error_text(e)}; {kept}") from None
