"""Numeric ranges: the accepted values of one numeric setting, checked before any work starts.

Every command uses `check_ranges(values, table)`: `rwkvft train` with the table derived from the
flag declaration (config.flags), the others (generate, bench, ...) with their own small tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import Checks, UserError


@dataclass(frozen=True)
class Range:
    """The accepted values of one numeric setting: lo <= x <= hi (either bound open, or None for
    none), finite, plus the special values in `also` (e.g. -1 = "same as lr_init")."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple = ()
    hint: str = ""          # appended to the error: what the value means or a good default

    def contains(self, x) -> bool:
        if x in self.also:
            return True
        if isinstance(x, float) and not math.isfinite(x):
            return False
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        return self.hi is None or not (x > self.hi or (self.hi_open and x == self.hi))

    def describe(self) -> str:
        if self.hi is None and (self.lo, self.lo_open) in ((1, False), (0, True)):
            text = "positive"
        elif self.hi is None:
            text = f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        else:
            lo = "-inf" if self.lo is None else _num(self.lo)
            text = f"in {'(' if self.lo_open or self.lo is None else '['}{lo}, {_num(self.hi)}" \
                   f"{')' if self.hi_open else ']'}"
        if self.also:
            text += "".join(f" (or {_num(v)})" for v in self.also if v is not None)
        return text


def _num(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def check_ranges(values: dict, ranges: dict[str, Range], prefix: str = "--") -> None:
    """UserError naming every value outside its Range (NaN and Inf included), one line each."""
    checks = Checks()
    for name, rng in ranges.items():
        if name not in values:
            continue
        x = values[name]
        if not rng.contains(x):
            hint = f"; {rng.hint}" if rng.hint else ""
            checks.add(f"{prefix}{name} must be {rng.describe()}, got {x!r}{hint}")
    checks.raise_if_any()
