"""Training configuration: the RWKV-PEFT tutorial's flags, typed and validated.

Every flag of `miss.sh` keeps its name and meaning. Values come from (lowest to highest
priority) the defaults below, a `--config FILE` (YAML or JSON, keys = flag names), and flags
given on the command line. The resolved config is saved as `proj_dir/train_config.json`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .adapters import registry as peft_registry
from .data.readers import DATA_TYPES
from .data.templates import TEMPLATES
from .errors import Checks, UserError, quote
from .utils import note

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "deepspeed_stage_1", "deepspeed_stage_2",
              "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload")
SCHEDULES = ("cos_decay", "wsd")
QUANT_MODES = ("none", "int8", "nf4")
TRAIN_TYPES = ("none", "infctx")   # RWKV-PEFT's --train_type; its "state"/"fullstate" are refused
INFCTX_BPTT = ("full", "truncated")


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
    data_type: str = "auto"        # auto or one of data.readers.DATA_TYPES
    dataload: str = "auto"         # auto|get|pad|only|pack (auto: pad for records, get for streams)
    loss_mask: str = "auto"        # auto|none|pad|qa (auto: qa when records have roles, else none)
    ctx_len: int = 1024
    micro_bsz: int = 1
    sft_field: list = field(default_factory=list)
    window_sampling: str = "random"  # get mode: random | cover (every window once per pass)
    long_docs: str = "split"       # pad/only: split | truncate documents longer than ctx_len
    group_by_length: bool = False  # pad: micro-batches of samples of similar length (less padding)
    text_field: str = "text"
    max_bad_fraction: float = 0.01  # jsonl: malformed lines tolerated before it is an error
    user_role: str = "User"
    assistant_role: str = "Assistant"
    system_role: str = "System"
    chat_template: str = "g1"      # g1|world|raw (data/templates/)
    train_on_think: bool = True    # g1: train the think text of replies (else only the answer)
    data_split: str = "train"      # Hugging Face datasets: the split to read
    data_config: str = ""          # Hugging Face datasets: the configuration (subset) name
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
    dist_timeout: float = 600.0    # seconds to wait for the other nodes to join
    precision: str = ""            # "" = bf16 on GPU, fp32 on CPU
    strategy: str = "auto"
    grad_cp: int = 0
    op: str = "auto"               # WKV op: auto|chunked|reference|cuda|fla|triton
    quant: str = "none"            # frozen base weights: none|int8|nf4 (bitsandbytes)
    # long samples in chunks carrying the RNN state (training/infctx.py)
    train_type: str = "none"       # none | infctx
    chunk_ctx: int = 512           # infctx chunk length: < ctx_len, a multiple of 16
    infctx_bptt: str = "full"      # full (exact gradient) | truncated (state detached per chunk)
    # peft
    peft: str = "miss"
    peft_config: str = "{}"
    train_parts: list = field(default_factory=list)
    adapter_format: str = "pth"    # pth|safetensors
    adapter_init: str = ""         # start from this adapter (file or HF peft folder)
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
    # validation, samples, step saves and budgets (training/validation.py, training/steps.py)
    val_file: str = ""             # held-out data, read like --data_file (same --data_type)
    val_split: float = 0.0         # or hold out this fraction of the training documents
    val_every: int = 0             # also validate every N optimizer steps (0 = epoch ends only)
    save_best: bool = False        # keep rwkv-best.pth: the adapter with the lowest val loss
    sample_prompts: str = ""       # prompts file: greedy continuations into samples.md at every save
    sample_tokens: int = 48        # tokens per sample continuation
    save_every_steps: int = 0      # also save rwkv-step{S}.pth + last.ckpt every N steps
    keep_last: int = 0             # keep only the newest K step saves (0 = keep all)
    max_steps: int = 0             # end the run after N optimizer steps (0 = no limit)
    max_tokens: int = 0            # end the run after about N training tokens (0 = no limit)
    # benchmark tasks at every save (evaluation/during_training.py; needs the eval extra)
    eval_tasks: str = ""           # lm-eval task names, comma-separated
    eval_limit: float = 0.0        # documents per task (0 = all)
    eval_include_path: str = ""    # folder of the user's own task YAMLs
    best_metric: str = ""          # TASK/METRIC that --save_best keeps the best of (default: val loss)
    # preference tuning (training/preference.py, data/preference.py)
    objective: str = "sft"         # sft | dpo | orpo | simpo
    beta: float = -1.0             # -1 = the objective's usual value (DPO 0.1, SimPO 2.0)
    dpo_loss: str = "sigmoid"      # sigmoid | hinge | ipo | robust
    label_smoothing: float = 0.0   # robust DPO and SimPO: the assumed share of flipped labels
    simpo_gamma: float = 0.5       # SimPO's target reward margin
    orpo_lambda: float = 0.1       # ORPO's weight of the odds-ratio term
    sft_weight: float = 0.0        # add this x the chosen answers' cross-entropy (RPO style)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


# Flags RWKV-PEFT parses that have no effect here (most are dead there too): accepted so old
# scripts run, and each one given prints a one-line note saying why it is ignored.
# RWKV-PEFT method names with no method here: what to use instead (aliases such as bone and
# disha, which are MiSS, are the method records' own: adapters/miss.py)
FOREIGN_METHODS = {
    "adalora": " (RWKV-PEFT maps adalora but never tested it; --peft lora is the nearest)",
    "prefix": " (RWKV-PEFT maps prefix but never tested it; --peft state tunes a prefix-like state)",
    "lisa": " (LISA left RWKV-PEFT in 2024; use --peft miss or lora)",
}

IGNORED_FLAGS = {
    "dim_att": "the attention size is read from the checkpoint",
    "dim_ffn": "the FFN size is read from the checkpoint",
    "head_size_divisor": "RWKV-5/6/7 checkpoints fix the ln_x scaling; nothing to set",
    "data_shuffle": "sampling is set by --dataload / --window_sampling and --random_seed",
    "ds_bucket_mb": "DeepSpeed bucket sizes are left at their defaults",
    "layerwise_lr": "one learning rate for every trainable tensor (RWKV-PEFT's has no effect on RWKV-7)",
    "avg_loss": "loss.jsonl logs every step's loss",
    "pre_ffn": "a legacy RWKV-LM option with no effect on released models",
    "head_qk": "a legacy RWKV-LM option with no effect on released models",
    "my_pos_emb": "a legacy RWKV-LM option with no effect on released models",
    "dropout": "dead in RWKV-PEFT too; for adapter dropout use --peft_config '{\"dropout\": 0.05}'",
    **{k: "a legacy RWKV-LM option with no effect on released models"
       for k in ("tiny_att_dim", "tiny_att_layer", "load_partial", "my_ffn_shift", "my_att_shift")},
    **{k: "RWKV-LM's pre-training sampler; sampling here is --dataload / --window_sampling"
       for k in ("magic_prime", "my_exit_tokens", "my_pile_stage", "my_pile_version",
                 "my_pile_shift", "my_pile_edecay", "my_random_steps", "my_sample_len")},
    "persistent_workers": "data loading workers are set by --num_workers alone",
    "prefetch_factor": "data loading workers are set by --num_workers alone",
    "fused_kernel": "rwkvft picks its fused kernels itself (--op auto)",
    "l2warp_sparse": "rwkvft adds no L2Wrap term",
}


@dataclass(frozen=True)
class Range:
    """The accepted values of one numeric setting: lo <= x <= hi (either bound open, or None for
    none), finite, plus the special values in `also` (e.g. -1 = "same as lr_init")."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple = ()
    hint: str = ""          # appended to the error: what the value means or a good default

    def contains(self, x) -> bool:
        if x in self.also:
            return True
        if isinstance(x, float) and not math.isfinite(x):
            return False
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        return self.hi is None or not (x > self.hi or (self.hi_open and x == self.hi))

    def describe(self) -> str:
        if self.hi is None and (self.lo, self.lo_open) in ((1, False), (0, True)):
            text = "positive"
        elif self.hi is None:
            text = f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        else:
            lo = "-inf" if self.lo is None else _num(self.lo)
            text = f"in {'(' if self.lo_open or self.lo is None else '['}{lo}, {_num(self.hi)}" \
                   f"{')' if self.hi_open else ']'}"
        if self.also:
            text += "".join(f" (or {_num(v)})" for v in self.also if v is not None)
        return text


def _num(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


# Every numeric TrainConfig field and its accepted values, checked in one place (check_ranges)
# before any work starts. A new numeric flag needs one row here; test_reliability_messages
# fails for a numeric field without one.
RANGES: dict[str, Range] = {
    "n_layer": Range(0, hint="0 = read from the checkpoint"),
    "n_embd": Range(0, hint="0 = read from the checkpoint"),
    "vocab_size": Range(0, hint="0 = read from the checkpoint"),
    "head_size_a": Range(0, hint="0 = read from the checkpoint"),
    "ctx_len": Range(1),
    "micro_bsz": Range(1),
    "max_bad_fraction": Range(0, 1),
    "epoch_steps": Range(1),
    "epoch_count": Range(1),
    "epoch_begin": Range(0),
    "epoch_save": Range(1),
    "my_exit": Range(0, hint="0 = off"),
    "lr_init": Range(0, 1, lo_open=True, hint="2e-5 is a good MiSS default"),
    "lr_final": Range(0, 1, also=(-1,), hint="-1 = same as --lr_init"),
    "warmup_steps": Range(0, also=(-1,), hint="-1 or 0 = no warm-up"),
    "wsd_decay_frac": Range(0, 1, lo_open=True),
    "accumulate_grad_batches": Range(1),
    "grad_clip": Range(0, hint="0 = no clipping"),
    "beta1": Range(0, 1, hi_open=True, hint="0.9 is the usual value"),
    "beta2": Range(0, 1, hi_open=True, hint="0.99 is the usual value"),
    "adam_eps": Range(0, 1, lo_open=True, hint="1e-8 is the usual value"),
    "weight_decay": Range(0, hint="0 = off"),
    "devices": Range(1),
    "num_nodes": Range(1),
    "dist_timeout": Range(0, lo_open=True, hint="seconds to wait for the other nodes"),
    "grad_cp": Range(0, 1),
    "random_seed": Range(0, 2**32 - 1),
    "num_workers": Range(0, hint="0 = load data in the training process"),
    "head_chunk": Range(1),
    "chunk_ctx": Range(1, hint="infctx chunk length, e.g. 512"),
    "val_split": Range(0, 1, hi_open=True, hint="a fraction of the documents, e.g. 0.05"),
    "val_every": Range(0, hint="0 = validate at epoch ends only"),
    "sample_tokens": Range(1, 4096),
    "save_every_steps": Range(0, hint="0 = save at epoch ends only"),
    "keep_last": Range(0, hint="0 = keep every step save"),
    "max_steps": Range(0, hint="0 = no limit"),
    "max_tokens": Range(0, hint="0 = no limit"),
    "eval_limit": Range(0, hint="documents per task; 0 = the whole task"),
    "beta": Range(0, lo_open=True, also=(-1,), hint="-1 = the objective's usual value (DPO 0.1, SimPO 2.0)"),
    "label_smoothing": Range(0, 0.5, hi_open=True, hint="0 = trust every label"),
    "simpo_gamma": Range(0, hint="0.5 is TRL's default"),
    "orpo_lambda": Range(0, lo_open=True, hint="0.1 is TRL's default"),
    "sft_weight": Range(0, hint="0 = off"),
}


def check_ranges(values: dict, ranges: dict[str, Range] = RANGES, prefix: str = "--") -> None:
    """UserError naming every value outside its Range (NaN and Inf included), one line each."""
    checks = Checks()
    for name, rng in ranges.items():
        if name not in values:
            continue
        x = values[name]
        if not rng.contains(x):
            hint = f"; {rng.hint}" if rng.hint else ""
            checks.add(f"{prefix}{name} must be {rng.describe()}, got {x!r}{hint}")
    checks.raise_if_any()


HELP = {
    "load_model": "base RWKV checkpoint (.pth or .safetensors)",
    "proj_dir": "output folder for adapters, logs and plots",
    "data_file": "training data: binidx prefix (no .bin/.idx), .jsonl, text, .npy, ...",
    "my_testing": "model version (x070, x060, x052); checked against the checkpoint",
    "n_layer": "number of layers; 0 = read from the checkpoint (a wrong value is an error)",
    "n_embd": "embedding size; 0 = read from the checkpoint (a wrong value is an error)",
    "vocab_size": "vocabulary size; 0 = read from the checkpoint (a wrong value is an error)",
    "head_size_a": "WKV head size; 0 = read from the checkpoint",
    "data_type": "auto, " + ", ".join(DATA_TYPES),
    "dataload": "sampling: get (random windows), pad (one document per sample), only, pack; auto = pad for jsonl/sft, get otherwise",
    "loss_mask": "auto (default: qa for records with roles, none for plain text), none, pad (ignore padding) "
                 "or qa (train on assistant/response tokens only)",
    "ctx_len": "longest training sample in tokens: a cap in pad/only modes (batches are padded to their longest sample), the window length in get/pack",
    "micro_bsz": "samples per device per step",
    "sft_field": "prompt and response field names for --data_type sft",
    "window_sampling": "get mode: random windows, or cover (every ctx_len window once per pass)",
    "long_docs": "documents longer than ctx_len: split into several samples, or truncate",
    "group_by_length": "pad mode: build each micro-batch from samples of similar length, so batches carry "
                       "almost no padding (for data of very uneven lengths, e.g. chat, with micro_bsz > 1)",
    "text_field": "jsonl field holding plain text",
    "max_bad_fraction": "fraction of malformed jsonl lines tolerated (skipped and reported)",
    "user_role": "chat role name for user turns", "assistant_role": "chat role name for replies",
    "system_role": "chat role name for system prompts",
    "chat_template": "how chat records are written: g1 (RWKV G1: cleaned turns, think, tool calls), world, "
                     "or raw (content as given: rwkvft's format before templates)",
    "train_on_think": "1 = train the think text of replies, 0 = only the answer after </think>",
    "data_split": "Hugging Face dataset split to read (org/name, save_to_disk folders, data files)",
    "data_config": "Hugging Face dataset configuration (subset) name for org/name",
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
    "dist_timeout": "seconds to wait for the other machines to join (--num_nodes > 1)",
    "precision": "fp32, tf32, fp16 or bf16 (default: bf16 on GPU, fp32 on CPU)",
    "strategy": "Lightning strategy: " + ", ".join(STRATEGIES),
    "grad_cp": "1 = activation checkpointing per block (less memory, slower)",
    "op": "WKV operator: auto (GPU: cuda, else fla, else chunked), chunked, reference (CPU); cuda, fla, triton (GPU)",
    "quant": "store the frozen base weights as none, int8 or nf4 (needs the quant extra: bitsandbytes)",
    "peft": "method: " + ", ".join(peft_registry.names()) + " (none = full fine-tuning)",
    "peft_config": "method options as JSON, e.g. '{\"r\":64}' or '{\"r\":8,\"lora_alpha\":32}'; "
                   "'{\"layers\":\"12-23\"}' (or [0,1,2]) adapts only those layers",
    "train_type": "none, or infctx: run each sample as chunks of --chunk_ctx tokens carrying the state (memory follows the chunk, not ctx_len)",
    "chunk_ctx": "infctx chunk length in tokens (< ctx_len, a multiple of 16)",
    "infctx_bptt": "infctx gradients: full (exact, = unchunked; default) or truncated (state detached between chunks, as RWKV-PEFT)",
    "train_parts": "extra trainable parts: ln, time, emb, head",
    "adapter_format": "adapter file format: pth or safetensors",
    "adapter_init": "start the adapter from this one (rwkv-N.pth, RWKV-PEFT file or HF peft folder, "
                    "e.g. RWKV-PEFT's {proj_dir}-adapter) instead of the method's init",
    "merge_output": "also write the merged bf16 model to this path at the end",
    "resume": "continue the run in --proj_dir from its last save",
    "overwrite": "start a new run in a --proj_dir that already holds one",
    "wandb": "Weights & Biases project name (needs the wandb extra)",
    "tensorboard": "also log to TensorBoard in proj_dir/tb (needs the tensorboard extra)",
    "random_seed": "seed for initialisation and data sampling",
    "num_workers": "DataLoader worker processes",
    "head_chunk": "tokens per chunk of the output head + loss",
    "progress": "show a progress bar",
    "val_file": "validation data, read exactly like --data_file (same --data_type, masks); loss/ppl logged",
    "val_split": "hold out this fraction of the training documents for validation (seeded by --random_seed; never trained on)",
    "val_every": "validate every N optimizer steps as well as at each epoch end (0 = epoch ends only)",
    "save_best": "keep rwkv-best.pth (+ adapter_config.json): the adapter with the lowest validation loss",
    "sample_prompts": "file of prompts (one a line, or jsonl chats): greedy continuations into samples.md at every save",
    "sample_tokens": "tokens generated per prompt for --sample_prompts",
    "save_every_steps": "also save rwkv-step{S}.pth and last.ckpt every N optimizer steps (resumable mid-epoch)",
    "keep_last": "keep only the newest K step saves (epoch saves and rwkv-best are never deleted; 0 = all)",
    "max_steps": "end the run after N optimizer steps (saved and resumable; 0 = no limit)",
    "max_tokens": "end the run after this many training tokens (samples x ctx_len; 0 = no limit)",
    "eval_tasks": "lm-eval task names (comma-separated): score every saved adapter, logged in loss.jsonl and loss.png (pip install 'rwkvft[eval]')",
    "eval_limit": "documents per task for --eval_tasks (0 = the whole task)",
    "eval_include_path": "folder of your own lm-eval task YAMLs for --eval_tasks",
    "best_metric": "with --save_best: keep the adapter with the best TASK/METRIC of --eval_tasks (e.g. hellaswag/acc_norm) instead of the lowest val loss",
    "objective": "sft (default: next-token loss) or a preference objective on prompt/chosen/rejected "
                 "pairs: dpo, orpo, simpo (README \"Preference tuning\")",
    "beta": "DPO/SimPO temperature (-1 = the objective's usual value: DPO 0.1, SimPO 2.0)",
    "dpo_loss": "DPO variant: sigmoid (DPO), hinge, ipo, robust (with --label_smoothing)",
    "label_smoothing": "robust DPO / SimPO: the assumed fraction of flipped preference labels, [0, 0.5)",
    "simpo_gamma": "SimPO's target reward margin gamma",
    "orpo_lambda": "ORPO's weight of the odds-ratio term (its NLL term has weight 1)",
    "sft_weight": "add this x the chosen answers' cross-entropy to a preference loss (RPO / CPO-SimPO)",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Register every TrainConfig field as a flag, with SUPPRESS defaults so we know what was given."""
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="YAML or JSON file of flag values (flags given here override it; "
                             "default: none)")
    from .utils import shown_default
    for f in dataclasses.fields(TrainConfig):
        flag = f"--{f.name}"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = HELP.get(f.name, "")
        if "default" not in text:
            text = f"{text} (default: {shown_default(default)})".replace("%", "%%")
        kw = dict(default=argparse.SUPPRESS, help=text)
        if isinstance(default, bool):
            parser.add_argument(flag, type=_parse_bool, nargs="?", const=True, **kw)
        elif isinstance(default, list):
            parser.add_argument(flag, nargs="*", **kw)
        else:
            parser.add_argument(flag, type=type(default), **kw)
    # merge, export, init, demo and prepare call it --force: the same meaning, the same word
    parser.add_argument("--force", dest="overwrite", type=_parse_bool, nargs="?", const=True,
                        default=argparse.SUPPRESS, help="the same as --overwrite (default: off)")
    for name in IGNORED_FLAGS:   # some are switches in RWKV-PEFT: a value is optional
        parser.add_argument(f"--{name}", nargs="?", const=True, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)


def _parse_bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 0/1 or true/false, got {text!r}")


def load_config_file(path: str) -> dict:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"--config {p} is a directory; give the YAML or JSON file inside it")
    if not p.is_file():
        raise UserError(f"--config file not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"--config {p} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
                        f"offset {e.start}); save it as UTF-8") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"cannot parse --config {p}: {quote(e)}") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {p} must hold a mapping of flag names to values")
    return data


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < --config file < flags given on the command line; then validate."""
    values: dict = {}
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    given = {k: v for k, v in vars(args).items() if k not in ("command", "debug", "config")}
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
    _canonical_method(cfg)
    if "lr_init" not in values and cfg.peft in peft_registry.names():
        # a method may want another LR (a state wants a far larger one: adapters/state.py)
        cfg.lr_init = peft_registry.get(cfg.peft).default_lr or cfg.lr_init
    validate(cfg)
    for k in sorted(set(values) & set(IGNORED_FLAGS)):
        note(f"--{k} is accepted for RWKV-PEFT scripts but ignored: {IGNORED_FLAGS[k]}")
    return cfg


def _canonical_method(cfg: TrainConfig) -> None:
    """--peft bone / disha (RWKV-PEFT's earlier names of MiSS) train MiSS: say so, use its name."""
    try:
        method = peft_registry.get(cfg.peft)
    except UserError:
        return   # validate() names the choices
    if method.name != cfg.peft:
        note(f"--peft {cfg.peft} is RWKV-PEFT's name for what rwkvft calls --peft {method.name}; "
             f"training {method.name}")
        cfg.peft = method.name


def _coerce(f: dataclasses.Field, value):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if f.name == "peft_config":
        if isinstance(value, dict):
            return json.dumps(value)
        if not isinstance(value, str):
            raise UserError(f"peft_config must be a mapping like {{r: 64}} (YAML) or a JSON "
                            f"object string, got {value!r}")
        return value
    try:
        if isinstance(default, bool):
            return _parse_bool(value) if not isinstance(value, bool) else value
        if isinstance(default, list):
            return list(value) if isinstance(value, (list, tuple)) else [value]
        if isinstance(default, int) and (isinstance(value, bool) or
                                         (isinstance(value, float) and not value.is_integer())):
            raise ValueError(value)  # int(1.5) would silently drop the fraction
        if isinstance(default, (int, float)) and isinstance(value, (list, dict)):
            raise TypeError(value)
        return type(default)(value)
    except (TypeError, ValueError, OverflowError, argparse.ArgumentTypeError):
        raise UserError(f"{f.name}: expected {type(default).__name__}, got {value!r}") from None


def validate(cfg: TrainConfig) -> None:
    """Every check, every problem reported together (one line each), then stop."""
    checks = Checks()
    bad = checks.add
    if not cfg.load_model:
        bad("--load_model is required (the base RWKV .pth to fine-tune)")
    if not cfg.data_file and cfg.data_type != "dummy":
        bad("--data_file is required (a binidx prefix, .jsonl, text or .npy file)")
    checks.run(check_ranges, dataclasses.asdict(cfg))
    if cfg.precision and cfg.precision not in PRECISIONS:
        bad(f"--precision {cfg.precision!r} is not one of {', '.join(PRECISIONS)}")
    if cfg.strategy not in STRATEGIES:
        bad(f"--strategy {cfg.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if cfg.lr_schedule not in SCHEDULES:
        bad(f"--lr_schedule {cfg.lr_schedule!r} is not one of {', '.join(SCHEDULES)}")
    if cfg.peft not in peft_registry.names():
        bad(f"--peft {cfg.peft!r} is not supported; choose one of {', '.join(peft_registry.names())}"
            f"{FOREIGN_METHODS.get(cfg.peft, '')}")
    if cfg.accelerator not in ("auto", "cpu", "gpu", "cuda"):
        bad(f"--accelerator {cfg.accelerator!r} is not one of auto, cpu, gpu")
    if cfg.chat_template not in TEMPLATES:
        bad(f"--chat_template {cfg.chat_template!r} is not one of {', '.join(TEMPLATES)}")
    if cfg.quant not in QUANT_MODES:
        bad(f"--quant {cfg.quant!r} is not one of {', '.join(QUANT_MODES)}")
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
    """--objective and its hyperparameters (ranges are in RANGES)."""
    from .training.preference import DPO_LOSSES, OBJECTIVES
    if cfg.objective not in OBJECTIVES:
        raise UserError(f"--objective {cfg.objective!r} is not one of {', '.join(OBJECTIVES)}")
    if cfg.dpo_loss not in DPO_LOSSES:
        raise UserError(f"--dpo_loss {cfg.dpo_loss!r} is not one of {', '.join(DPO_LOSSES)}")
    if cfg.objective == "sft":
        return
    if cfg.train_type == "infctx":
        raise UserError(f"--objective {cfg.objective} runs each pair in one pass; drop --train_type "
                        f"infctx (pairs longer than --ctx_len are truncated)")
    if cfg.label_smoothing and not (cfg.objective == "simpo" or cfg.dpo_loss == "robust"):
        raise UserError("--label_smoothing is used by --dpo_loss robust and --objective simpo only")


def _validate_evaluation(cfg: TrainConfig, bad) -> None:
    """How the validation / step-save / budget flags fit together (their ranges are in RANGES)."""
    if cfg.val_split and cfg.val_file:
        bad("--val_file and --val_split both choose the validation data; give one")
    if (cfg.val_every or (cfg.save_best and not cfg.best_metric)) and not (cfg.val_file or cfg.val_split):
        bad("--val_every / --save_best need validation data: add --val_file PATH or --val_split 0.05 "
            "(or --save_best --best_metric TASK/METRIC with --eval_tasks)")
    from .evaluation.during_training import check_flags
    check_flags(cfg, bad)
    if cfg.keep_last and not cfg.save_every_steps:
        bad("--keep_last prunes step saves: add --save_every_steps N")


def validate_infctx(cfg) -> None:
    """--train_type / --chunk_ctx / --infctx_bptt (shared with `rwkvft bench`)."""
    if cfg.train_type in ("state", "fullstate"):   # RWKV-PEFT's older state-tuning switches
        raise UserError(f"--train_type {cfg.train_type} is RWKV-PEFT's older state-tuning switch; "
                        f"use --peft state here (--train_type takes none or infctx)")
    if cfg.train_type not in TRAIN_TYPES:
        raise UserError(f"--train_type {cfg.train_type!r} is not one of {', '.join(TRAIN_TYPES)}")
    if cfg.infctx_bptt not in INFCTX_BPTT:
        raise UserError(f"--infctx_bptt {cfg.infctx_bptt!r} is not one of {', '.join(INFCTX_BPTT)}")
    from .kernels import SEQ_MULTIPLE
    if cfg.train_type == "infctx" and not (0 < cfg.chunk_ctx < cfg.ctx_len
                                           and cfg.chunk_ctx % SEQ_MULTIPLE == 0):
        raise UserError(f"--chunk_ctx {cfg.chunk_ctx} with --ctx_len {cfg.ctx_len}: infctx needs a "
                        f"chunk length below ctx_len and a multiple of 16 (e.g. 512)")
