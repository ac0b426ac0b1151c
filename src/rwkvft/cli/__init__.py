"""`rwkvft` command line: one dispatcher, one module per subcommand.

Each subcommand module `rwkvft.cli.<name>_cmd` defines
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int | None
and is imported only when its command runs (or when `rwkvft <cmd> --help` is asked for), so
`rwkvft --help` stays fast and a missing optional dependency only affects its own command.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from ..errors import UserError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("rwkvft.cli.train_cmd", "fine-tune an RWKV model (MiSS, LoRA, PiSSA, state); accepts the RWKV-PEFT tutorial flags"),
    "merge": ("rwkvft.cli.merge_cmd", "merge an adapter into its base model and write an official .pth / .st"),
    "export": ("rwkvft.cli.export_cmd", "write what a runtime loads beside a base: RWKV Runner / Ai00 state files"),
    "generate": ("rwkvft.cli.generate_cmd", "generate text from a model (optionally with an adapter)"),
    "inspect": ("rwkvft.cli.inspect_cmd", "show a checkpoint's architecture, sizes and dtype"),
    "init": ("rwkvft.cli.init_cmd", "write a freshly initialised RWKV-7 checkpoint of any size"),
    "prepare": ("rwkvft.cli.prepare_cmd", "tokenize jsonl / text into a binidx pair for training"),
    "demo": ("rwkvft.cli.demo_cmd", "end-to-end demo on CPU: init a tiny model, train MiSS, merge, generate"),
    "bench": ("rwkvft.cli.bench_cmd", "measure training tokens/s, peak memory and MFU"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rwkvft",
        description="Fine-tune RWKV language models with parameter-efficient methods.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks on errors")
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    debug = "--debug" in argv
    try:
        parser = build_parser(command)
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 0
        module = importlib.import_module(COMMANDS[args.command][0])
        rc = module.run(args)
        return int(rc or 0)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"rwkvft: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rwkvft: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m rwkvft.cli
    sys.exit(main())
