"""`rwkvft eval`: loss, perplexity and token count of a model (+ adapter) on a data file.

The file is read exactly as training reads it (same reader, tokenizer, end-of-document token and
loss mask, via data.from_flags.data_config) and scored by the same function validation uses
(training.evaluation), so `rwkvft eval` on a run's --val_file and adapter prints the run's
validation loss. Data settings (ctx_len, dataload, loss_mask, roles, micro_bsz, ...) default to
the run's train_config.json beside the adapter; flags given here override them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import UserError

# settings that decide how a data file becomes samples (copied from the run's train_config.json)
DATA_KEYS = ("data_type", "dataload", "loss_mask", "ctx_len", "micro_bsz", "long_docs",
             "text_field", "sft_field", "user_role", "assistant_role", "system_role",
             "max_bad_fraction", "head_chunk", "chat_template", "train_on_think", "data_split", "data_config")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import HELP
    S = argparse.SUPPRESS
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
    for name, typ in (("data_type", str), ("dataload", str), ("loss_mask", str), ("ctx_len", int),
                      ("micro_bsz", int), ("long_docs", str), ("text_field", str),
                      ("user_role", str), ("assistant_role", str), ("system_role", str),
                      ("max_bad_fraction", float), ("head_chunk", int), ("chat_template", str),
                      ("data_split", str), ("data_config", str)):
        parser.add_argument(f"--{name}", type=typ, default=S,
                            help=HELP[name] + " (default: the run's train_config.json, else train's default)")
    parser.add_argument("--sft_field", nargs=2, default=S,
                        help=HELP["sft_field"] + " (default: the run's train_config.json, else none)")


def _saved_settings(args) -> dict:
    path = Path(args.train_config) if args.train_config else (
        Path(args.adapter).parent / "train_config.json" if args.adapter else None)
    if path is None or not path.exists():
        if args.train_config:
            raise UserError(f"--train_config {path} not found")
        return {}
    from ..training.saved_config import train_config_settings
    # a run from before chat templates wrote its chat records in what is now `raw`
    return {"chat_template": "raw", **train_config_settings(path, DATA_KEYS)}


def eval_config(args):
    """A TrainConfig holding only what decides the samples: saved settings < flags given."""
    from ..config import TrainConfig, validate
    cfg = TrainConfig(load_model=args.model, data_file=args.data_file)
    for k, v in {**_saved_settings(args), **{k: getattr(args, k) for k in DATA_KEYS
                                              if hasattr(args, k)}}.items():
        setattr(cfg, k, list(v) if k == "sft_field" else v)
    validate(cfg)
    return cfg


def apply_state(model, state_path) -> None:
    """Start every sequence from the state in `state_path` (a state adapter rwkv-N.pth, an RWKV
    Runner / RWKV-PEFT state .pth or an Ai00 .state; checked against the model)."""
    from .. import set_state
    set_state(model, state_path)


def _models(args, base_sd):
    """[(label, model)]: the base alone (without an adapter, or with --compare) and the adapted one.
    With --base, "base" is that file and "adapted" is --model (+ adapter/state)."""
    from ..models import model_from_state_dict
    out = []
    if args.base is not None:
        from ..formats import read_state_dict
        from ..training.safety import check_finite_base
        other = read_state_dict(args.base)
        check_finite_base(other, args.base)
        out.append(("base", model_from_state_dict(other)))
        adapted = True
    else:
        adapted = args.adapter is not None or args.state is not None
    if not out and (args.compare or not adapted):
        out.append(("base", model_from_state_dict(base_sd)))
    if adapted:
        sd = base_sd
        if args.adapter is not None:
            from ..formats import merge_adapter_file
            sd, _, _ = merge_adapter_file(base_sd, args.adapter, args.lora_alpha)
        model = model_from_state_dict(sd)
        if args.state is not None:
            apply_state(model, args.state)
        out.append(("adapted", model))
    return out


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from ..data.datasets import read_data
    from ..training.evaluation import EvalResult, evaluate
    from ..training.safety import check_finite_base
    from ..data.from_flags import data_config
    from ..formats import infer_config, read_state_dict
    from ..training.validation import val_samples_from

    if args.compare and args.adapter is None and args.state is None and args.base is None:
        raise UserError("--compare needs --adapter (or --state), or --base for a merged --model")
    if args.base is not None and not args.compare:
        raise UserError("--base is the other side of --compare; add --compare")
    if args.tasks is not None:  # benchmark tasks through lm-evaluation-harness
        from ..evaluation.command import run_task_eval
        return run_task_eval(args)
    if args.data_file is None:
        raise UserError("eval needs --data_file (loss on your data) or --tasks (benchmark scores)")
    cfg = eval_config(args)
    if args.pairs:
        return _run_pairs(args, cfg)
    base_sd = read_state_dict(args.model)
    check_finite_base(base_sd, args.model)  # train's check: a damaged file, not a NaN loss
    mcfg = infer_config(base_sd)
    dcfg = dataclasses.replace(data_config(cfg), vocab_size=mcfg.vocab_size)
    dcfg.progress = bool(args.progress) and not args.json
    samples = val_samples_from(read_data(dcfg), dcfg)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UserError(f"--device {args.device!r} is not a device; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA GPU is visible; use --device cpu")
    results = {}
    for label, model in _models(args, base_sd):
        model.set_runtime(op=args.op)
        t0 = time.perf_counter()
        s, c = evaluate(model.to(device), samples, batch_size=cfg.micro_bsz, head_chunk=cfg.head_chunk,
                        device=device, progress=bool(args.progress) and not args.json
                        and len(samples) > 64, desc=f"scoring ({label})")
        results[label] = EvalResult(float(s), int(round(float(c))), time.perf_counter() - t0)
        del model
    _print(args, cfg, dcfg, len(samples), results)
    return 0


def _run_pairs(args, cfg) -> int:
    """--pairs: training/preference_eval.py does the scoring."""
    import torch

    from ..formats import read_state_dict
    from ..data.formats import Roles
    from ..training.preference_eval import score_file
    if not args.beta > 0:
        raise UserError(f"--beta must be positive, got {args.beta}")
    models = _models(args, read_state_dict(args.model))
    for _, m in models:
        m.set_runtime(op=args.op)
    res = score_file(models, args.data_file, cfg.ctx_len, cfg.micro_bsz, torch.device(args.device),
                     Roles(cfg.user_role, cfg.assistant_role, cfg.system_role), args.beta,
                     cfg.max_bad_fraction, cfg.head_chunk)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"preference pairs: {args.data_file}: {res['data']}")
    print(f"{'':10s}{'accuracy':>10s}{'margin':>12s}")
    for label in ("base", "adapted"):
        if label in res:
            print(f"{label:10s}{res[label]['accuracy']:10.3f}{res[label]['margin']:12.4f}")
    if "rewards" in res:
        r = res["rewards"]
        print(f"DPO rewards (beta {r['beta']:g}): accuracy {r['rewards/accuracies']:.3f}, "
              f"margin {r['rewards/margins']:.4f}")
    return 0


def _print(args, cfg, dcfg, n_samples: int, results: dict) -> None:
    main = results.get("adapted") or results["base"]
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
