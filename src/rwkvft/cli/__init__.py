"""`rwkvft` command line: one dispatcher, one module per subcommand.

Each subcommand module `rwkvft.cli.<name>_cmd` defines
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int | None
and is imported only when its command runs (or when `rwkvft <cmd> --help` is asked for), so
`rwkvft --help` stays fast and a missing optional dependency only affects its own command.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
import traceback

from ..errors import UserError, quote
from ..utils import quiet_library_noise

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("rwkvft.cli.train_cmd", "fine-tune an RWKV model (MiSS, LoRA, PiSSA, state); accepts the RWKV-PEFT tutorial flags"),
    "merge": ("rwkvft.cli.merge_cmd", "merge an adapter into its base model and write an official .pth / .st"),
    "generate": ("rwkvft.cli.generate_cmd", "generate text from a model (optionally with an adapter)"),
    "export": ("rwkvft.cli.export_cmd", "write an adapter for another runtime: Ai00 LoRA, Hugging Face model or HF-peft folder, RWKV Runner / Ai00 state file"),
    "inspect": ("rwkvft.cli.inspect_cmd", "show a checkpoint's architecture, sizes and dtype"),
    "init": ("rwkvft.cli.init_cmd", "write a freshly initialised RWKV-7 checkpoint of any size"),
    "data": ("rwkvft.cli.data_cmd", "show what training reads from a data file: rendered records, trained spans, token totals, lint"),
    "prepare": ("rwkvft.cli.prepare_cmd", "tokenize jsonl / text into a binidx pair for training"),
    "eval": ("rwkvft.cli.eval_cmd", "loss, perplexity and tokens of a model (+ adapter) on a data file, read as training reads it"),
    "demo": ("rwkvft.cli.demo_cmd", "end-to-end demo on CPU: init a tiny model, train MiSS, merge, generate"),
    "bench": ("rwkvft.cli.bench_cmd", "measure training tokens/s, peak memory and MFU"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is our one `rwkvft: error:` line (exit 2) like any other."""

    def error(self, message: str):   # self.prog names the subcommand: `rwkvft train`
        raise UserError(f"{message} (see `{self.prog} --help`)")


class _HelpWithDefaults(argparse.HelpFormatter):
    """Every optional flag's help names its default (unless the text already does): `rwkvft
    train`'s declared flags write theirs (config.flag), the others' come from argparse."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or action.required or "default" in text
                or action.default is argparse.SUPPRESS or isinstance(action, argparse._HelpAction)):
            return text
        from ..config.flag import shown_default
        return f"{text} (default: {shown_default(action.default)})".replace("%", "%%")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    from .. import __version__
    parser = _Parser(
        prog="rwkvft", formatter_class=_HelpWithDefaults,
        description="Fine-tune RWKV language models with parameter-efficient methods.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"rwkvft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=_HelpWithDefaults)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks on errors (default: off)")
        if name == command:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def _command_in(argv: list[str]) -> str | None:
    for a in argv:
        if a in COMMANDS:
            return a
        if not a.startswith("-"):
            return None
    return None


def _join_negative_numbers(argv: list[str]) -> list[str]:
    """`--lr_init -1e-3` -> `--lr_init=-1e-3`: argparse takes a negative number in scientific
    notation for an option, so the range check can refuse it with a reason instead."""
    out: list[str] = []
    for a in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _negative_number(a):
            out[-1] = f"{out[-1]}={a}"
        else:
            out.append(a)
    return out


def _negative_number(text: str) -> bool:
    if not text.startswith("-") or text.startswith("--"):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _refuse_unknown(parser: argparse.ArgumentParser, extra: list[str], command: str | None) -> None:
    """Flags argparse did not take: RWKV-PEFT's get a pointer, typos a "did you mean"."""
    from ..errors import Checks
    from .foreign_flags import unknown_flags
    sub = parser._subparsers._group_actions[0].choices.get(command) if command else parser
    known = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    checks = Checks()
    for line in unknown_flags(extra, known, command):
        checks.add(line)
    checks.raise_if_any()


def _os_error_line(e: OSError) -> str:
    where = f" {e.filename}" if e.filename else ""
    if e.errno == errno.ENOSPC:
        return (f"the disk is full (writing{where}); free some space and run again "
                f"(files saved before are intact)")
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where} ({e.strerror}); choose a folder you can write to"
    return f"file system error on{where or ' a file'}: {e.strerror or quote(e)}"


def _silence_stdout() -> None:
    """After a broken pipe, the interpreter's final flush of stdout would fail again."""
    import os
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by a test's capture
        pass


def main(argv: list[str] | None = None) -> int:
    argv = _join_negative_numbers(list(sys.argv[1:] if argv is None else argv))
    command = _command_in(argv)
    debug = "--debug" in argv
    if not debug:
        quiet_library_noise()
    try:
        if command == "train":  # a busy --proj_dir is refused before the slow imports
            from ..training.runlock import refuse_if_busy
            refuse_if_busy(argv)
        parser = build_parser(command)
        args, extra = parser.parse_known_args(argv)
        if extra:
            _refuse_unknown(parser, extra, args.command)
        if not args.command:
            parser.print_help()
            return 0
        module = importlib.import_module(COMMANDS[args.command][0])
        rc = module.run(args)
        return int(rc or 0)
    except UserError as e:
        if debug:
            traceback.print_exc()
        for line in getattr(e, "lines", [str(e)]):   # Problems: every problem, one line each
            print(f"rwkvft: error: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rwkvft inspect M | head -3`: the reader left, nothing is wrong
        _silence_stdout()
        return 141   # what a shell reports for a command stopped by SIGPIPE
    except OSError as e:  # disk full / read-only folder outside the places that check it
        if debug:
            traceback.print_exc()
        print(f"rwkvft: error: {_os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rwkvft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m rwkvft.cli
    sys.exit(main())
