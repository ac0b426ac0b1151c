"""The record of one `rwkvft train` flag: everything about it in one place.

A `Flag` gives the name, the default (whose type is the flag's type: bool, int, float, str or
list), the help text, the numeric range, the accepted words, and where else the value is used:
`data=True` copies it by name into the `DataConfig` training reads (`config.data_config`),
`eval=True` makes `rwkvft eval` take it too (defaulting to the run's train_config.json), and
`must_match=` / `safe=` say, with the reason, whether `--resume` may change it
(training/resume_rules.py: exactly one of the two is given).
`--help`, `TrainConfig`, the range check, train_config.json, `DataConfig` and `rwkvft eval` are all
derived from these records (config.flags holds the declaration; config.record the derived parts).
"""
from __future__ import annotations

from dataclasses import dataclass

from .ranges import Range


@dataclass(frozen=True)
class Flag:
    name: str
    default: object
    help: str
    range: Range | None = None    # numeric flags: the accepted values (checked before any work)
    choices: tuple = ()           # str flags: the accepted words ("" too when the default is "")
    data: bool = False            # a DataConfig field of the same name (copied by data_config)
    eval: bool = False            # `rwkvft eval` takes it too (default: the run's train_config.json)
    must_match: str = ""          # why a --resume must keep the run's value (what is optimised)
    safe: str = ""                # why a --resume may change it (where/how fast/how often/how long)

    @property
    def type(self) -> type:
        return type(self.default)

    def fresh_default(self):
        """The default value; a new list each time (a dataclass default_factory)."""
        return list(self.default) if isinstance(self.default, list) else self.default

    def help_with_default(self) -> str:
        """The help text as `--help` shows it: with the default unless the text names it."""
        if "default" in self.help:
            return self.help
        return f"{self.help} (default: {shown_default(self.default)})"


def shown_default(value) -> str:
    """A default as --help writes it: on/off for switches, none for empty."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value in ("", None) or value == []:
        return "none"
    return str(value)
