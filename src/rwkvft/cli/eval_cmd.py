"""`rwkvft eval`: loss, perplexity and token count of a model (+ adapter) on a data file
(rwkvft.evaluate, evaluation/data_eval.py), preference-pair ranking (--pairs) or benchmark tasks
(--tasks, evaluation/command.py). Data flags given here override the run's train_config.json
beside the adapter."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import add_eval_arguments
    parser.add_argument("--model", required=True, help="base (or merged) checkpoint, .pth or .safetensors")
    parser.add_argument("--adapter", default=None, help="adapter file (rwkv-N.pth) applied to --model")
    parser.add_argument("--state", default=None,
                        help="initial state every sequence starts from: a state adapter rwkv-N.pth, an RWKV "
                             "Runner / RWKV-PEFT state .pth or an Ai00 .state")
    parser.add_argument("--data_file", default=None,
                        help="data to score, any --data_type training reads (or use --tasks)")
    from ..evaluation.command import add_task_arguments
    add_task_arguments(parser)
    parser.add_argument("--compare", action="store_true",
                        help="score --model alone and with --adapter/--state (or --base against "
                             "--model, e.g. a merged model), side by side")
    parser.add_argument("--base", default=None,
                        help="with --compare: the base checkpoint to score against --model "
                             "(for a merged model)")
    parser.add_argument("--pairs", action="store_true",
                        help="--data_file holds preference pairs (prompt/chosen/rejected): print each "
                             "model's ranking accuracy and margin, and with --compare DPO's reward "
                             "accuracy and margin of the adapter against the base")
    parser.add_argument("--beta", type=float, default=0.1, help="with --pairs: DPO's beta for the rewards")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (loss, ppl, tokens, ...) instead of text")
    parser.add_argument("--train_config", default=None, metavar="FILE",
                        help="train_config.json whose data settings to use (default: the one beside --adapter)")
    parser.add_argument("--lora_alpha", type=float, default=None,
                        help="alpha for RWKV-PEFT LoRA adapter files (ours record it)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--op", default="chunked", help="WKV op (chunked, reference; cuda/fla on GPU)")
    parser.add_argument("--progress", type=int, default=1, help="1 = progress bar on long files")
    add_eval_arguments(parser)  # the declared flags marked eval=True (config/flags.py)


def run(args: argparse.Namespace) -> int:
    from ..config import eval_flags
    from ..evaluation.data_eval import check_sides, evaluate, evaluate_pairs

    check_sides(args.adapter, args.state, args.base, args.compare)
    if args.tasks is not None:  # benchmark tasks through lm-evaluation-harness
        from ..evaluation.command import run_task_eval
        return run_task_eval(args)
    if args.data_file is None:
        raise UserError("eval needs --data_file (loss on your data) or --tasks (benchmark scores)")
    common = dict(adapter=args.adapter, state=args.state, base=args.base, compare=args.compare,
                  lora_alpha=args.lora_alpha, device=args.device, op=args.op,
                  train_config=args.train_config,
                  settings={f.name: getattr(args, f.name) for f in eval_flags() if hasattr(args, f.name)})
    if args.pairs:
        _print_pairs(args, evaluate_pairs(args.model, args.data_file, beta=args.beta, **common))
        return 0
    report = evaluate(args.model, args.data_file, progress=bool(args.progress) and not args.json,
                      **common)
    _print(args, report)
    return 0


def _print_pairs(args, res: dict) -> None:
    if args.json:
        print(json.dumps(res))
        return
    print(f"preference pairs: {args.data_file}: {res['data']}")
    print(f"{'':10s}{'accuracy':>10s}{'margin':>12s}")
    for label in ("base", "adapted"):
        if label in res:
            print(f"{label:10s}{res[label]['accuracy']:10.3f}{res[label]['margin']:12.4f}")
    if "rewards" in res:
        r = res["rewards"]
        print(f"DPO rewards (beta {r['beta']:g}): accuracy {r['rewards/accuracies']:.3f}, "
              f"margin {r['rewards/margins']:.4f}")


def _print(args, report) -> None:
    main, results, dcfg, n_samples = report.main, report.results, report.data, report.n_samples
    if args.json:
        out = {**main.as_dict(), "samples": n_samples, "model": args.model, "adapter": args.adapter,
               "state": args.state, "data_file": args.data_file, "data_type": dcfg.data_type,
               "dataload": dcfg.dataload, "ctx_len": dcfg.ctx_len, "loss_mask": dcfg.loss_mask}
        if len(results) > 1:
            out.update(base=results["base"].as_dict(), adapted=results["adapted"].as_dict())
        print(json.dumps(out))
        return
    print(f"data: {args.data_file} ({dcfg.data_type}, dataload {dcfg.dataload}, ctx_len {dcfg.ctx_len}, "
          f"loss_mask {dcfg.loss_mask}): {n_samples} samples, {main.tokens} tokens scored")
    print(f"{'':10s}{'loss':>10s}{'ppl':>12s}{'tokens':>10s}{'time':>9s}")
    for label, r in results.items():
        print(f"{label:10s}{r.loss:10.4f}{r.ppl:12.2f}{r.tokens:10d}{r.seconds:8.1f}s")
    if len(results) > 1:
        b, a = results["base"], results["adapted"]
        print(f"{'change':10s}{a.loss - b.loss:+10.4f}{'x%.3g' % (a.ppl / b.ppl):>12s}")
    sys.stdout.flush()
