"""`rwkvft prepare`: tokenize jsonl / plain text into a binidx pair (PREFIX.bin + PREFIX.idx);
with --ref_logps, write a preference file's reference log-probs for DPO (training/ref_logps.py)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE",
                        help="jsonl files (one record per line: text, chat messages or prompt/response) "
                             "or plain-text files (one document per file)")
    parser.add_argument("--output", "--out", dest="output", default="", metavar="PREFIX",
                        help="output prefix: writes PREFIX.bin and PREFIX.idx (uint16, RWKV-LM/RWKV-PEFT binidx); "
                             "with --ref_logps the file to write (default: INPUT.ref_logps.safetensors)")
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
    ref = parser.add_argument_group("--ref_logps: the reference log-probs of preference pairs for "
                                    "`rwkvft train --objective dpo --ref_logps FILE`")
    ref.add_argument("--ref_logps", action="store_true",
                     help="--input is a preference file (prompt/chosen/rejected): write the base model's "
                          "summed answer log-probs of every pair, with the base's fingerprint, the data "
                          "file's hash and the rendering flags (give train's --ctx_len, --chat_template, "
                          "role flags and --train_on_think)")
    ref.add_argument("--load_model", default="", help="the base model (train's --load_model)")
    ref.add_argument("--ctx_len", type=int, default=1024, help="as train's --ctx_len (default 1024)")
    ref.add_argument("--train_on_think", type=int, default=1, choices=(0, 1), help="as train's (default 1)")
    ref.add_argument("--micro_bsz", type=int, default=4, help="pairs per forward (default 4)")
    ref.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ref.add_argument("--op", default="auto", help="WKV op (default auto)")
    ref.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="forward precision (default fp32)")


def run(args: argparse.Namespace) -> int:
    from ..data.formats import Roles
    from ..data.prepare import prepare
    from ..data.templates import get_template
    from ..errors import UserError
    if not 0 <= args.max_bad_fraction <= 1:
        raise UserError(f"--max_bad_fraction must be between 0 and 1, got {args.max_bad_fraction}")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0 (0 = all cores), got {args.workers}")
    if args.ref_logps:
        return _ref_logps(args)
    if not args.output:
        raise UserError("--output PREFIX is required (it writes PREFIX.bin and PREFIX.idx)")
    summary = prepare(args.input, args.output, eod=not args.no_eod, workers=args.workers,
                      text_field=args.text_field, fmt=args.format, max_bad_fraction=args.max_bad_fraction,
                      force=args.force, roles=Roles(args.user_role, args.assistant_role, args.system_role,
                                  get_template(args.chat_template).name),
                      progress=not args.quiet)
    print(summary.text())
    return 0


def _ref_logps(args: argparse.Namespace) -> int:
    from ..config import TrainConfig
    from ..data.templates import get_template
    from ..errors import UserError
    from ..training.ref_logps import prepare
    if len(args.input) != 1:
        raise UserError("--ref_logps takes one --input preference file (the --data_file of the DPO run)")
    if not args.load_model:
        raise UserError("--ref_logps needs --load_model BASE (the base model of the DPO run)")
    if args.ctx_len < 1 or args.micro_bsz < 1:
        raise UserError("--ctx_len and --micro_bsz must be >= 1")
    cfg = TrainConfig(ctx_len=args.ctx_len, chat_template=get_template(args.chat_template).name,
                      user_role=args.user_role, assistant_role=args.assistant_role, system_role=args.system_role,
                      train_on_think=bool(args.train_on_think), max_bad_fraction=args.max_bad_fraction)
    print(prepare(args.input[0], args.load_model, cfg, args.output, args.micro_bsz, args.device, args.op,
                  args.precision, args.force, progress=not args.quiet))
    return 0
