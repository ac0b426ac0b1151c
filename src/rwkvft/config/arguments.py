"""Declared flags -> argparse arguments (`rwkvft train`, and the data flags of `rwkvft eval`)."""
from __future__ import annotations

import argparse

from .flag import Flag, shown_default
from .flags import IGNORED_FLAGS
from .record import FLAGS


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Register every declared flag, with SUPPRESS defaults so we know what was given."""
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="YAML or JSON file of flag values (flags given here override it; "
                             "default: none)")
    for flag in FLAGS.values():
        add_flag_argument(parser, flag, flag.help_with_default())
    # merge, export, init, demo and prepare call it --force: the same meaning, the same word
    parser.add_argument("--force", dest="overwrite", type=parse_bool, nargs="?", const=True,
                        default=argparse.SUPPRESS, help="the same as --overwrite (default: off)")
    for name in IGNORED_FLAGS:   # some are switches in RWKV-PEFT: a value is optional
        parser.add_argument(f"--{name}", nargs="?", const=True, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)


def add_flag_argument(parser: argparse.ArgumentParser, flag: Flag, help_text: str) -> None:
    """One flag as an argument of its type; the default stays SUPPRESS (given flags only)."""
    kw = dict(default=argparse.SUPPRESS, help=help_text)
    if isinstance(flag.default, bool):
        parser.add_argument(f"--{flag.name}", type=parse_bool, nargs="?", const=True, **kw)
    elif isinstance(flag.default, list):
        parser.add_argument(f"--{flag.name}", nargs="*", **kw)
    else:
        parser.add_argument(f"--{flag.name}", type=flag.type, **kw)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that decide how a data file becomes samples, for `rwkvft eval`."""
    for flag in FLAGS.values():
        if flag.eval:
            add_flag_argument(parser, flag, f"{flag.help} (default: the run's train_config.json, "
                                            f"else {shown_default(flag.default)})")


def parse_bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 0/1 or true/false, got {text!r}")
