"""`rwkvft eval --tasks ...`: benchmark scores of a model, a fine-tune, or both side by side.

The flags live here (eval_cmd adds them with one call) so the command module stays thin.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..errors import UserError


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("benchmark tasks (lm-evaluation-harness; pip install 'rwkvft[eval]')")
    g.add_argument("--tasks", default=None, metavar="NAMES",
                   help="comma-separated lm-eval task names (mmlu,hellaswag,...) or names from "
                        "--include_path: score these instead of --data_file")
    g.add_argument("--num_fewshot", type=int, default=None, help="few-shot examples per prompt (task default)")
    g.add_argument("--limit", type=float, default=None,
                   help="documents per task (a fraction of the task if below 1)")
    g.add_argument("--include_path", default=None, metavar="DIR",
                   help="folder of your own task YAMLs (local data files work offline)")
    g.add_argument("--batch_size", type=int, default=8, help="sequences per forward pass")
    g.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    g.add_argument("--shared_context", type=int, default=1,
                   help="1 = run each shared context once and continue every answer from its state")
    g.add_argument("--apply_chat_template", action="store_true",
                   help="wrap prompts in the model's chat template (lm-eval's option)")


def _sides(args) -> list[tuple[str, dict]]:
    """[(label, RwkvLM kwargs)]: base alone (no adapter/state, or --compare) and the adapted one."""
    adapted = args.adapter is not None or args.state is not None or args.base is not None
    common = {"lora_alpha": args.lora_alpha}
    out = []
    if args.compare or not adapted:
        out.append(("base", {"pretrained": args.base or args.model}))
    if adapted:
        out.append(("adapted", {"pretrained": args.model, "adapter": args.adapter, "state": args.state,
                                **common}))
    return out


def run_task_eval(args) -> int:
    from .tasks import check_tasks, parse_tasks, require_lm_eval, task_manager
    names = parse_tasks(args.tasks)
    if args.data_file is not None:
        raise UserError("--data_file and --tasks are two evaluations; run them one at a time")
    if args.limit is not None and not args.limit > 0:
        raise UserError(f"--limit must be a positive number of documents per task, got {args.limit:g}")
    if args.apply_chat_template:
        raise UserError("rwkvft has no chat template for RWKV models in lm-eval; drop "
                        "--apply_chat_template (tasks are scored as plain text)")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    require_lm_eval()
    from ..hardware import resolve_device
    device = resolve_device(args.device, "fp32", flag="--device").device
    tm = task_manager(names, args.include_path)
    check_tasks(tm, names)
    sides = _sides(args)
    results, stats, docs = {}, {}, {}
    for label, kw in sides:
        results[label], stats[label], docs[label] = score(names, tm, device=device, args=args,
                                                          per_doc=len(sides) == 2, **kw)
    _print(args, names, results, stats, docs)
    return 0


def score(names, tm, device, args, per_doc=False, **model_kw):
    """(metrics table, {"seconds", "tokens", "plain_tokens"}, per-document scores or None) of one
    model on the tasks."""
    from .harness import RwkvLM
    from .tasks import run_tasks
    lm = RwkvLM(device=str(device), dtype=args.dtype, batch_size=args.batch_size,
                shared_context=bool(args.shared_context), op=args.op, **model_kw)
    t0 = time.perf_counter()
    info: dict = {}
    table = run_tasks(lm, names, num_fewshot=args.num_fewshot, limit=args.limit, tm=tm, info=info,
                      per_doc=per_doc)
    c = lm.scorer.counter
    return table, {"seconds": round(time.perf_counter() - t0, 2), "tokens": c.total,
                   "tokens_by_kind": dict(c.tokens), "plain_tokens": c.plain}, info.get("docs")


def _print(args, names, results: dict, stats: dict, docs: dict) -> None:
    from .tasks import compare, format_compare, format_table
    both = len(results) == 2
    if both:
        paired = compare(results["base"], results["adapted"], docs=(docs["base"], docs["adapted"]))
    if args.json:
        out = {"tasks": names, "model": args.model, "adapter": args.adapter, "state": args.state,
               "num_fewshot": args.num_fewshot, "limit": args.limit,
               "results": {k: _jsonable(v) for k, v in results.items()}, "stats": stats}
        if both:
            out["compare"] = paired
        print(json.dumps(out))
        return
    if both:
        print("\n".join(format_compare(paired)))
    else:
        (label, table), = results.items()
        print("\n".join(format_table(table)))
    for label, s in stats.items():
        print(f"{label}: {s['seconds']:.1f}s, {s['tokens']} tokens run through the model "
              f"(the plain path would run {s['plain_tokens']} for the log-likelihood requests; "
              f"shared context {'on' if args.shared_context else 'off'})")
    sys.stdout.flush()


def _jsonable(table: dict) -> dict:
    return {task: {m: {"value": v, "stderr": se} for m, (v, se) in ms.items()} for task, ms in table.items()}
