"""`rwkvft prepare`: tokenize jsonl / plain text into a binidx pair (PREFIX.bin + PREFIX.idx)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE",
                        help="jsonl files (one record per line: text, chat messages or prompt/response) "
                             "or plain-text files (one document per file)")
    parser.add_argument("--output", "--out", dest="output", required=True, metavar="PREFIX",
                        help="output prefix: writes PREFIX.bin and PREFIX.idx (uint16, RWKV-LM/RWKV-PEFT binidx)")
    parser.add_argument("--no_eod", action="store_true",
                        help="do not end each document with the EOD token 0")
    parser.add_argument("--workers", type=int, default=0,
                        help="tokenizer processes (default 0 = all CPU cores; inputs under 4 MB use one)")
    parser.add_argument("--text_field", default="text", help="jsonl field holding plain text (default: text)")
    parser.add_argument("--format", default="auto", choices=["auto", "jsonl", "text"],
                        help="input format; auto = jsonl for .jsonl/.ndjson files, text otherwise")
    parser.add_argument("--max_bad_fraction", type=float, default=0.01,
                        help="fail when more than this fraction of records is malformed (default 0.01)")
    parser.add_argument("--force", "--overwrite", dest="force", action="store_true", help="overwrite existing PREFIX.bin / PREFIX.idx")
    parser.add_argument("--user_role", default="User", help="name of the user role in chat records")
    parser.add_argument("--assistant_role", default="Assistant", help="name of the assistant role")
    parser.add_argument("--system_role", default="System", help="name of the system role")
    parser.add_argument("--chat_template", default="g1", help="how chat records are written: g1, world or raw "
                                                               "(as rwkvft train --chat_template)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.formats import Roles
    from ..data.prepare import prepare
    from ..data.templates import get_template
    from ..errors import UserError
    if not 0 <= args.max_bad_fraction <= 1:
        raise UserError(f"--max_bad_fraction must be between 0 and 1, got {args.max_bad_fraction}")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0 (0 = all cores), got {args.workers}")
    summary = prepare(args.input, args.output, eod=not args.no_eod, workers=args.workers,
                      text_field=args.text_field, fmt=args.format, max_bad_fraction=args.max_bad_fraction,
                      force=args.force, roles=Roles(args.user_role, args.assistant_role, args.system_role,
                                  get_template(args.chat_template).name),
                      progress=not args.quiet)
    print(summary.text())
    return 0
