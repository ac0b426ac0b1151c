"""Which settings `--resume` may change: every flag says so in its declaration (config/flags.py).

A resumed run must optimise the same thing as the run it continues (same model, adapter,
data and its order, loss, optimiser and schedule), or its result would silently be neither run.
Every declared flag gives exactly one of `must_match="why"` or `safe="why"` (config.declare
refuses a flag without), so a new flag cannot slip through unclassified: MUST_MATCH flags are
compared with the run's train_config.json and a change is refused; SAFE flags change only where,
how fast, how often or how long, never what is optimised.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..config import FLAGS


class _Classified(Mapping):
    """{flag name: reason} of the flags declared with `attr` (a live view: flags declared at
    run time are in it too)."""

    def __init__(self, attr: str):
        self.attr = attr

    def _table(self) -> dict:
        return {f.name: getattr(f, self.attr) for f in FLAGS.values() if getattr(f, self.attr)}

    def __getitem__(self, name):
        return self._table()[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self):
        return len(self._table())


MUST_MATCH = _Classified("must_match")   # flag -> why it must match
SAFE = _Classified("safe")               # flag -> why it may change on resume


def check_resume_flags(cfg, proj: Path) -> None:
    """Refuse a --resume whose MUST_MATCH settings differ from the run's train_config.json."""
    from .safety import check_resume_config
    check_resume_config(cfg, proj, tuple(MUST_MATCH))
