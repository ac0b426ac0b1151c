"""How `rwkvft train`'s settings fit together, checked before anything is read or written.
Numeric ranges and accepted words come from the flag declaration; the rest is here."""
from __future__ import annotations

import dataclasses

from ..adapters import registry as peft_registry
from ..errors import Checks, UserError
from .flags import FOREIGN_METHODS, INFCTX_BPTT, TRAIN_TYPES
from .ranges import check_ranges
from .record import FLAGS, RANGES


def validate(cfg) -> None:
    """Every check, every problem reported together (one line each), then stop."""
    checks = Checks()
    bad = checks.add
    if not cfg.load_model:
        bad("--load_model is required (the base RWKV .pth to fine-tune)")
    if not cfg.data_file and cfg.data_type != "dummy":
        bad("--data_file is required (a binidx prefix, .jsonl, text or .npy file)")
    checks.run(check_ranges, dataclasses.asdict(cfg), RANGES)
    checks.run(check_choices, cfg)
    if cfg.peft not in peft_registry.names():
        bad(f"--peft {cfg.peft!r} is not supported; choose one of {', '.join(peft_registry.names())}"
            f"{FOREIGN_METHODS.get(cfg.peft, '')}")
    if cfg.accelerator not in ("auto", "cpu", "gpu", "cuda"):
        bad(f"--accelerator {cfg.accelerator!r} is not one of auto, cpu, gpu")
    if cfg.adapter_format not in ("pth", "safetensors"):
        bad(f"--adapter_format must be pth or safetensors, got {cfg.adapter_format!r}")
    if cfg.resume and cfg.overwrite:
        bad("--resume and --overwrite contradict each other; pick one")
    if cfg.resume and cfg.adapter_init:
        bad("--resume continues from last.ckpt, --adapter_init starts a new run from an adapter; pick one")
    checks.run(_validate_evaluation, cfg, bad)
    checks.run(validate_infctx, cfg)
    checks.run(validate_objective, cfg)
    checks.raise_if_any()


def validate_objective(cfg) -> None:
    """--objective and its hyperparameters (names and ranges are in the declaration)."""
    if cfg.objective == "sft":
        return
    if cfg.train_type == "infctx":
        raise UserError(f"--objective {cfg.objective} scores each pair in one forward, not in --train_type "
                        f"infctx chunks; drop --train_type infctx and set --ctx_len to your longest pair "
                        f"(`rwkvft data FILE --objective {cfg.objective}` shows the lengths; a longer pair "
                        f"keeps its prompt's end and its answers' start)")
    if cfg.label_smoothing and not (cfg.objective == "simpo" or cfg.dpo_loss == "robust"):
        raise UserError("--label_smoothing is used by --dpo_loss robust and --objective simpo only")


def check_choices(cfg) -> None:
    """Every flag declared with `choices` holds one of them ("" too when that is its default)."""
    for flag in FLAGS.values():
        value = getattr(cfg, flag.name)
        if flag.choices and value not in flag.choices and not (value == "" == flag.default):
            raise UserError(f"--{flag.name} {value!r} is not one of {', '.join(flag.choices)}")


def _validate_evaluation(cfg, bad) -> None:
    """How the validation / step-save / budget flags fit together (their ranges are declared)."""
    if cfg.val_split and cfg.val_file:
        bad("--val_file and --val_split both choose the validation data; give one")
    if (cfg.val_every or (cfg.save_best and not cfg.best_metric)) and not (cfg.val_file or cfg.val_split):
        bad("--val_every / --save_best need validation data: add --val_file PATH or --val_split 0.05 "
            "(or --save_best --best_metric TASK/METRIC with --eval_tasks)")
    _validate_tasks(cfg, bad)
    if cfg.keep_last and not cfg.save_every_steps:
        bad("--keep_last prunes step saves: add --save_every_steps N")


def _validate_tasks(cfg, bad) -> None:
    """How --eval_tasks / --eval_limit / --best_metric fit together (evaluation/during_training.py
    scores the tasks)."""
    if (cfg.eval_limit or cfg.eval_include_path) and not cfg.eval_tasks:
        bad("--eval_limit / --eval_include_path go with --eval_tasks NAMES")
    if cfg.best_metric:
        if not cfg.save_best:
            bad("--best_metric chooses what --save_best keeps; add --save_best")
        if "/" not in cfg.best_metric:
            bad(f"--best_metric is TASK/METRIC (e.g. hellaswag/acc_norm), got {cfg.best_metric!r}")
        task = cfg.best_metric.split("/", 1)[0]
        if not cfg.eval_tasks or task not in [t.strip() for t in cfg.eval_tasks.split(",")]:
            bad(f"--best_metric {cfg.best_metric}: add {task} to --eval_tasks")


def validate_infctx(cfg) -> None:
    """--train_type / --chunk_ctx / --infctx_bptt (shared with `rwkvft bench`)."""
    if cfg.train_type in ("state", "fullstate"):   # RWKV-PEFT's older state-tuning switches
        raise UserError(f"--train_type {cfg.train_type} is RWKV-PEFT's older state-tuning switch; "
                        f"use --peft state here (--train_type takes none or infctx)")
    if cfg.train_type not in TRAIN_TYPES:
        raise UserError(f"--train_type {cfg.train_type!r} is not one of {', '.join(TRAIN_TYPES)}")
    if cfg.infctx_bptt not in INFCTX_BPTT:
        raise UserError(f"--infctx_bptt {cfg.infctx_bptt!r} is not one of {', '.join(INFCTX_BPTT)}")
    from ..kernels import SEQ_MULTIPLE
    if cfg.train_type == "infctx" and not (0 < cfg.chunk_ctx < cfg.ctx_len
                                           and cfg.chunk_ctx % SEQ_MULTIPLE == 0):
        raise UserError(f"--chunk_ctx {cfg.chunk_ctx} with --ctx_len {cfg.ctx_len}: infctx needs a "
                        f"chunk length below ctx_len and a multiple of 16 (e.g. 512)")
