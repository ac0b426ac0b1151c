"""Training configuration: the RWKV-PEFT tutorial's flags, typed and validated.

Every flag of `miss.sh` keeps its name and meaning. Values come from (lowest to highest
priority) the defaults below, a `--config FILE` (YAML or JSON, keys = flag names), and flags
given on the command line. The resolved config is saved as `proj_dir/train_config.json`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "deepspeed_stage_1", "deepspeed_stage_2",
              "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload")
SCHEDULES = ("cos_decay", "wsd")
PEFT_METHODS = ("miss", "lora", "pissa", "state")
QUANT_MODES = ("none", "int8", "nf4")


@dataclass
class TrainConfig:
    # model and paths
    load_model: str = ""
    proj_dir: str = "out"
    data_file: str = ""
    my_testing: str = ""           # "x070"/"x060"/"x052": checked against the file ("" = from file)
    n_layer: int = 0               # 0 = from the file; otherwise checked against it
    n_embd: int = 0
    vocab_size: int = 0            # 0 = from the file (the tutorial's 65536 is checked)
    head_size_a: int = 0           # RWKV-PEFT's head size flag; 0 = from the file
    # data
    data_type: str = "auto"        # auto|binidx|jsonl|utf-8|utf-16le|numpy|uint16|dummy|sft
    dataload: str = "auto"         # auto|get|pad|only|pack (auto: pad for records, get for streams)
    loss_mask: str = "none"        # none|pad|qa
    ctx_len: int = 1024
    micro_bsz: int = 1
    sft_field: list = field(default_factory=list)
    window_sampling: str = "random"  # get mode: random | cover (every window once per pass)
    long_docs: str = "split"       # pad/only: split | truncate documents longer than ctx_len
    text_field: str = "text"
    max_bad_fraction: float = 0.01  # jsonl: malformed lines tolerated before it is an error
    user_role: str = "User"
    assistant_role: str = "Assistant"
    system_role: str = "System"
    # schedule
    epoch_steps: int = 1000
    epoch_count: int = 1
    epoch_begin: int = 0
    epoch_save: int = 1
    my_exit: int = 0               # stop (as if interrupted) after this many epochs; 0 = off
    lr_init: float = 2e-5
    lr_final: float = -1.0         # -1 = same as lr_init (constant LR)
    warmup_steps: int = 0
    lr_schedule: str = "cos_decay"
    wsd_decay_frac: float = 0.1    # wsd: fraction of the steps spent decaying at the end
    accumulate_grad_batches: int = 1
    grad_clip: float = 1.0
    # optimizer
    beta1: float = 0.9
    beta2: float = 0.99
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    # hardware
    accelerator: str = "auto"      # auto|cpu|gpu
    devices: int = 1
    num_nodes: int = 1
    precision: str = ""            # "" = bf16 on GPU, fp32 on CPU
    strategy: str = "auto"
    grad_cp: int = 0
    op: str = "auto"               # WKV op: auto|chunked|reference|cuda|fla|triton
    quant: str = "none"            # frozen base weights: none|int8|nf4 (bitsandbytes)
    # peft
    peft: str = "miss"
    peft_config: str = "{}"
    train_parts: list = field(default_factory=list)
    adapter_format: str = "pth"    # pth|safetensors
    # outputs
    merge_output: str = ""         # write the merged bf16 model here at the end
    resume: bool = False
    overwrite: bool = False
    wandb: str = ""
    tensorboard: bool = False
    random_seed: int = 0
    num_workers: int = 0
    head_chunk: int = 2048         # tokens per head+cross-entropy chunk (bounds logits memory)
    progress: bool = True

    def resolved_lr_final(self) -> float:
        return self.lr_init if self.lr_final < 0 else self.lr_final

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


# Flags RWKV-PEFT parses but that have no effect (here or there): accepted so old scripts run.
IGNORED_FLAGS = ("dim_att", "dim_ffn", "head_size_divisor", "data_shuffle", "ds_bucket_mb",
                 "layerwise_lr", "avg_loss", "pre_ffn", "head_qk", "my_pos_emb", "dropout")

HELP = {
    "load_model": "base RWKV checkpoint (.pth or .safetensors)",
    "proj_dir": "output folder for adapters, logs and plots",
    "data_file": "training data: binidx prefix (no .bin/.idx), .jsonl, text, .npy, ...",
    "my_testing": "model version (x070, x060, x052); checked against the checkpoint",
    "n_layer": "number of layers; 0 = read from the checkpoint (a wrong value is an error)",
    "n_embd": "embedding size; 0 = read from the checkpoint (a wrong value is an error)",
    "vocab_size": "vocabulary size; 0 = read from the checkpoint (a wrong value is an error)",
    "head_size_a": "WKV head size; 0 = read from the checkpoint",
    "data_type": "auto, binidx, jsonl, utf-8, utf-16le, numpy, uint16, dummy, sft",
    "dataload": "sampling: get (random windows), pad (one document per sample), only, pack; auto = pad for jsonl/sft, get otherwise",
    "loss_mask": "none, pad (ignore padding) or qa (train on assistant/response tokens only)",
    "ctx_len": "tokens per training sample",
    "micro_bsz": "samples per device per step",
    "sft_field": "prompt and response field names for --data_type sft",
    "window_sampling": "get mode: random windows, or cover (every ctx_len window once per pass)",
    "long_docs": "documents longer than ctx_len: split into several samples, or truncate",
    "text_field": "jsonl field holding plain text",
    "max_bad_fraction": "fraction of malformed jsonl lines tolerated (skipped and reported)",
    "user_role": "chat role name for user turns", "assistant_role": "chat role name for replies",
    "system_role": "chat role name for system prompts",
    "epoch_steps": "micro-batches per device per epoch; an epoch is epoch_steps x micro_bsz x devices samples",
    "epoch_count": "number of epochs to train",
    "epoch_begin": "epoch number to start from (file numbering, LR position and data)",
    "epoch_save": "save the adapter every N epochs (and always at the end)",
    "my_exit": "stop after this many epochs (as if interrupted; continue with --resume)",
    "lr_init": "peak learning rate (default 2e-5, good for MiSS; at most 1e-4; --peft state: 1e-2)",
    "lr_final": "final learning rate; -1 = same as lr_init (constant)",
    "warmup_steps": "linear warm-up optimizer steps",
    "lr_schedule": "cos_decay (cosine from lr_init to lr_final) or wsd (warmup-stable-decay)",
    "wsd_decay_frac": "wsd: fraction of all steps spent in the final decay",
    "accumulate_grad_batches": "micro-batches per optimizer step",
    "grad_clip": "gradient norm clipping (0 = off)",
    "beta1": "AdamW beta1", "beta2": "AdamW beta2", "adam_eps": "AdamW epsilon",
    "weight_decay": "AdamW weight decay (applied to matrices only)",
    "accelerator": "auto, cpu or gpu",
    "devices": "number of devices (processes)",
    "num_nodes": "number of machines",
    "precision": "fp32, tf32, fp16 or bf16 (default: bf16 on GPU, fp32 on CPU)",
    "strategy": "Lightning strategy: " + ", ".join(STRATEGIES),
    "grad_cp": "1 = activation checkpointing per block (less memory, slower)",
    "op": "WKV operator: auto (GPU: cuda, else fla, else chunked), chunked, reference (CPU); cuda, fla, triton (GPU)",
    "quant": "store the frozen base weights as none, int8 or nf4 (needs the quant extra: bitsandbytes)",
    "peft": "method: miss, lora, pissa or state (trainable initial WKV state per layer)",
    "peft_config": "method options as JSON, e.g. '{\"r\":64}' or '{\"r\":8,\"lora_alpha\":32}'",
    "train_parts": "extra trainable parts: ln, time, emb, head",
    "adapter_format": "adapter file format: pth or safetensors",
    "merge_output": "also write the merged bf16 model to this path at the end",
    "resume": "continue the run in --proj_dir from its last save",
    "overwrite": "start a new run in a --proj_dir that already holds one",
    "wandb": "Weights & Biases project name (needs the wandb extra)",
    "tensorboard": "also log to TensorBoard in proj_dir/tb (needs the tensorboard extra)",
    "random_seed": "seed for initialisation and data sampling",
    "num_workers": "DataLoader worker processes",
    "head_chunk": "tokens per chunk of the output head + loss",
    "progress": "show a progress bar",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Register every TrainConfig field as a flag, with SUPPRESS defaults so we know what was given."""
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="YAML or JSON file of flag values (flags given here override it)")
    for f in dataclasses.fields(TrainConfig):
        flag = f"--{f.name}"
        kw = dict(default=argparse.SUPPRESS, help=HELP.get(f.name, ""))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, bool):
            parser.add_argument(flag, type=_parse_bool, nargs="?", const=True, **kw)
        elif isinstance(default, list):
            parser.add_argument(flag, nargs="*", **kw)
        else:
            parser.add_argument(flag, type=type(default), **kw)
    for name in IGNORED_FLAGS:
        parser.add_argument(f"--{name}", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _parse_bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 0/1 or true/false, got {text!r}")


def load_config_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config file not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"cannot parse --config {p}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {p} must hold a mapping of flag names to values")
    return data


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < --config file < flags given on the command line; then validate."""
    values: dict = {}
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    given = {k: v for k, v in vars(args).items()
             if k not in ("command", "debug", "config") and k not in IGNORED_FLAGS}
    values.update(given)
    names = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(names) - set(IGNORED_FLAGS))
    if unknown:
        raise UserError(f"unknown setting(s) in --config: {', '.join(unknown)}; "
                        f"see `rwkvft train --help` for the valid names")
    cfg = TrainConfig()
    for k, v in values.items():
        if k in names:
            setattr(cfg, k, _coerce(names[k], v))
    if isinstance(cfg.peft_config, dict):
        cfg.peft_config = json.dumps(cfg.peft_config)
    if cfg.peft == "state" and "lr_init" not in values:  # a state wants a far larger LR
        from .adapters.state import DEFAULT_LR
        cfg.lr_init = DEFAULT_LR
    validate(cfg)
    return cfg


def _coerce(f: dataclasses.Field, value):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(default, dict) or f.name == "peft_config":
        return value
    try:
        if isinstance(default, bool):
            return _parse_bool(value) if not isinstance(value, bool) else value
        if isinstance(default, list):
            return list(value) if isinstance(value, (list, tuple)) else [value]
        return type(default)(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise UserError(f"{f.name}: expected {type(default).__name__}, got {value!r}") from None


def validate(cfg: TrainConfig) -> None:
    def bad(msg):
        raise UserError(msg)

    if not cfg.load_model:
        bad("--load_model is required (the base RWKV .pth to fine-tune)")
    if not cfg.data_file and cfg.data_type != "dummy":
        bad("--data_file is required (a binidx prefix, .jsonl, text or .npy file)")
    for name in ("ctx_len", "micro_bsz", "epoch_steps", "epoch_count", "epoch_save",
                 "accumulate_grad_batches", "devices", "num_nodes", "head_chunk"):
        if getattr(cfg, name) <= 0:
            bad(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.epoch_begin < 0 or cfg.my_exit < 0 or cfg.warmup_steps < -1:
        bad("--epoch_begin, --my_exit and --warmup_steps must not be negative")
    if cfg.lr_init <= 0:
        bad(f"--lr_init must be positive, got {cfg.lr_init}")
    if cfg.precision and cfg.precision not in PRECISIONS:
        bad(f"--precision {cfg.precision!r} is not one of {', '.join(PRECISIONS)}")
    if cfg.strategy not in STRATEGIES:
        bad(f"--strategy {cfg.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if cfg.lr_schedule not in SCHEDULES:
        bad(f"--lr_schedule {cfg.lr_schedule!r} is not one of {', '.join(SCHEDULES)}")
    if cfg.peft not in PEFT_METHODS:
        bad(f"--peft {cfg.peft!r} is not supported; choose one of {', '.join(PEFT_METHODS)}")
    if cfg.accelerator not in ("auto", "cpu", "gpu", "cuda"):
        bad(f"--accelerator {cfg.accelerator!r} is not one of auto, cpu, gpu")
    if cfg.grad_cp not in (0, 1):
        bad(f"--grad_cp must be 0 or 1, got {cfg.grad_cp}")
    if cfg.quant not in QUANT_MODES:
        bad(f"--quant {cfg.quant!r} is not one of {', '.join(QUANT_MODES)}")
    if cfg.adapter_format not in ("pth", "safetensors"):
        bad(f"--adapter_format must be pth or safetensors, got {cfg.adapter_format!r}")
    if not 0 < cfg.wsd_decay_frac <= 1:
        bad(f"--wsd_decay_frac must be in (0, 1], got {cfg.wsd_decay_frac}")
    if cfg.resume and cfg.overwrite:
        bad("--resume and --overwrite contradict each other; pick one")
