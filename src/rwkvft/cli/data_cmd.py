"""`rwkvft data FILE [flags as for train]`: the rendered text of records with the trained spans
marked, token totals as training logs them, length percentiles against --ctx_len, and lint.
Preference files (--objective dpo|orpo|simpo, or records with "chosen" and "rejected") show
pairs: the prompt, both answers (the scored tokens marked), token counts and skipped pairs."""
from __future__ import annotations

import argparse
import json
import sys

GREEN, RESET = "\x1b[32m", "\x1b[0m"
OWN = ("file", "show", "sample", "json", "color")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import add_train_arguments
    parser.add_argument("file", help="data file, as --data_file of `rwkvft train` (jsonl, parquet, "
                                     "a datasets folder, org/name, ...)")
    parser.add_argument("--show", type=int, default=3, metavar="N", help="show the first N records (default 3)")
    parser.add_argument("--sample", type=int, default=0, metavar="N",
                        help="show N records drawn at random (seeded by --random_seed) instead")
    parser.add_argument("--json", action="store_true", help="print one JSON object for scripts")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="mark trained text in colour (auto: on a terminal) or as [[...]]")
    add_train_arguments(parser)


def _config(args):
    """The DataConfig `rwkvft train` would build from the same flags."""
    from ..config import resolve_config
    from ..config.data_config import data_config
    train_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in OWN})
    train_args.data_file = args.file
    if not getattr(train_args, "load_model", ""):
        train_args.load_model = "(not read by rwkvft data)"
    cfg = resolve_config(train_args)
    return data_config(cfg), cfg


def _marked(segments, colour: bool) -> str:
    from ..data.templates.base import merge_segments
    out = []
    for text, trained in merge_segments(segments):
        text = text.replace("\x00", "<EOD>")
        if trained:
            out.append(f"{GREEN}{text}{RESET}" if colour else f"[[{text}]]")
        else:
            out.append(text)
    return "".join(out)


def _print_text(p, colour: bool) -> None:
    t = p.totals
    for v in p.shown:
        print(f"--- record {v.number}: {v.tokens} tokens, {v.trained} trained")
        print(_marked(v.segments, colour))
    print(f"--- {p.source}: chat_template {t['chat_template']}, loss_mask {t['loss_mask']}")
    print(f"records: {t['records']} read, {t['documents']} used, {t['skipped']} skipped"
          + "".join(f"; {n} {why}" for why, n in t["skipped_by_reason"].items()))
    print(f"tokens: {t['tokens']}, trained {t['trained_tokens']} ({100 * t['trained_fraction']:.1f}%)")
    lengths = ", ".join(f"{k} {v}" for k, v in t["lengths"].items())
    print(f"lengths (tokens per document): {lengths}; {t['longer_than_ctx_len']} longer than "
          f"ctx_len+1 = {t['ctx_len'] + 1}")
    for number, msg in p.lint:
        print(f"warning: record {number}: {msg}")
    if not p.lint:
        print("lint: no problems found")


def _print_pairs(p, colour: bool) -> None:
    t = p.totals
    for v in p.shown:
        n = v.tokens
        print(f"--- record {v.number}: prompt {n['prompt']} tokens, chosen {n['chosen']}, rejected "
              f"{n['rejected']} (the answers are scored)")
        print(v.prompt.replace("\x00", "<EOD>"))
        for label in ("chosen", "rejected"):
            print(f"{label}:" + _marked([(getattr(v, label), True)], colour))
    print(f"--- {p.source}: preference pairs, chat_template {t['chat_template']}")
    print(f"records: {t['records']} read, {t['pairs']} pairs, {t['truncated']} truncated to ctx_len; "
          f"skipped {t['skipped']}" + "".join(f"; {n} {why}" for why, n in t["skipped_by_reason"].items())
          + f"; malformed {t['malformed']}" + "".join(f"; {n} {why}" for why, n in t["malformed_by_reason"].items()))
    k = t["tokens"]
    print(f"tokens: prompts {k['prompt']}, chosen {k['chosen']}, rejected {k['rejected']} "
          f"(scored {t['scored_tokens']})")
    lengths = ", ".join(f"{a} {b}" for a, b in t["lengths"].items())
    print(f"lengths (prompt + longer answer, after truncation): {lengths}; ctx_len+1 = {t['ctx_len'] + 1}")
    for number, msg in p.lint:
        print(f"warning: record {number}: {msg}")


def _pairs_json(p) -> dict:
    shown = [{"record": v.number, "tokens": v.tokens, "prompt": v.prompt, "chosen": v.chosen,
              "rejected": v.rejected} for v in p.shown]
    return {"source": p.source, "totals": p.totals, "pairs": shown,
            "lint": [{"record": n, "message": m} for n, m in p.lint]}


def run(args: argparse.Namespace) -> int:
    from ..data.preview import looks_like_pairs, preview, preview_pairs
    from ..errors import UserError
    if args.show < 0 or args.sample < 0:
        raise UserError("--show and --sample take a count >= 0")
    dcfg, cfg = _config(args)
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    if cfg.objective != "sft" or looks_like_pairs(dcfg):
        p = preview_pairs(dcfg, show=args.show, sample=args.sample, seed=cfg.random_seed)
        if args.json:
            print(json.dumps(_pairs_json(p), ensure_ascii=False))
        else:
            _print_pairs(p, colour)
        return 0
    p = preview(dcfg, show=args.show, sample=args.sample, seed=cfg.random_seed)
    if args.json:
        shown = [{"record": v.number, "tokens": v.tokens, "trained_tokens": v.trained,
                  "segments": [[text, trained] for text, trained in v.segments]} for v in p.shown]
        print(json.dumps({"source": p.source, "totals": p.totals, "records": shown,
                          "lint": [{"record": n, "message": m} for n, m in p.lint]}, ensure_ascii=False))
        return 0
    _print_text(p, colour)
    return 0
