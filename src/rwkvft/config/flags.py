"""The declaration of every `rwkvft train` flag: the RWKV-PEFT tutorial's flags and ours.

Each flag is declared once, here, as a `Flag` (config/flag.py): name, default (its type is the
flag's type), help, range, accepted words, and whether training's data reader (`data=True`) and
`rwkvft eval` (`eval=True`) use it. Everything else is derived (docs/internals.md, "Adding a flag").
Values come from (lowest to highest priority) these defaults, a `--config FILE` (YAML or JSON,
keys = flag names), and flags given on the command line.
"""
from __future__ import annotations

from ..adapters import registry as peft_registry
from ..data.readers import DATA_TYPES
from ..data.templates import TEMPLATES
from .flag import Flag as F
from .ranges import Range

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "deepspeed_stage_1", "deepspeed_stage_2",
              "deepspeed_stage_2_offload", "deepspeed_stage_3", "deepspeed_stage_3_offload")
SCHEDULES = ("cos_decay", "wsd")
QUANT_MODES = ("none", "int8", "nf4")
TRAIN_TYPES = ("none", "infctx")   # RWKV-PEFT's --train_type; its "state"/"fullstate" are refused
INFCTX_BPTT = ("full", "truncated")
# preference tuning's words (training/preference.py holds the maths behind them)
OBJECTIVES = ("sft", "dpo", "orpo", "simpo")
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "robust")
_FROM_FILE = "0 = read from the checkpoint"

DECLARED: list[F] = [
    # model and paths
    F("load_model", "", "base RWKV checkpoint (.pth or .safetensors)",
      must_match="the base model being adapted"),
    F("proj_dir", "out", "output folder for adapters, logs and plots",
      safe="the folder being resumed"),
    F("data_file", "", "training data: binidx prefix (no .bin/.idx), .jsonl, text, .npy, ...",
      must_match="the data"),
    F("my_testing", "", "model version (x070, x060, x052); checked against the checkpoint",
      safe="restates the checkpoint (checked against it)"),
    F("n_layer", 0, "number of layers; 0 = read from the checkpoint (a wrong value is an error)",
      Range(0, hint=_FROM_FILE),
      safe="restates the checkpoint (checked against it)"),
    F("n_embd", 0, "embedding size; 0 = read from the checkpoint (a wrong value is an error)",
      Range(0, hint=_FROM_FILE),
      safe="restates the checkpoint (checked against it)"),
    F("vocab_size", 0, "vocabulary size; 0 = read from the checkpoint (a wrong value is an error)",
      Range(0, hint=_FROM_FILE),
      safe="restates the checkpoint (checked against it)"),
    F("head_size_a", 0, "WKV head size; 0 = read from the checkpoint", Range(0, hint=_FROM_FILE),
      safe="restates the checkpoint (checked against it)"),
    # data
    F("data_type", "auto", "auto, " + ", ".join(DATA_TYPES), eval=True,
      must_match="how the data is read"),
    F("dataload", "auto", "sampling: get (random windows), pad (one document per sample), only, "
      "pack; auto = pad for jsonl/sft, get otherwise", eval=True,
      must_match="how samples are cut"),
    F("loss_mask", "auto", "auto (default: qa for records with roles, none for plain text), none, "
      "pad (ignore padding) or qa (train on assistant/response tokens only)", data=True, eval=True,
      must_match="which tokens carry loss"),
    F("ctx_len", 1024, "longest training sample in tokens: a cap in pad/only modes (batches are "
      "padded to their longest sample), the window length in get/pack", Range(1), data=True, eval=True,
      must_match="the sample length"),
    F("micro_bsz", 1, "samples per device per step", Range(1), data=True, eval=True,
      must_match="the batch"),
    F("sft_field", [], "prompt and response field names for --data_type sft", data=True, eval=True,
      must_match="which fields are prompt and response"),
    F("window_sampling", "random", "get mode: random windows, or cover (every ctx_len window once "
      "per pass)", data=True,
      must_match="which windows are drawn"),
    F("long_docs", "split", "documents longer than ctx_len: split into several samples, or truncate",
      data=True, eval=True,
      must_match="how long documents are cut"),
    F("group_by_length", False, "pad mode: build each micro-batch from samples of similar length, so "
      "batches carry almost no padding (for data of very uneven lengths, e.g. chat, with "
      "micro_bsz > 1)", data=True,
      must_match="the batch order"),
    F("text_field", "text", "jsonl field holding plain text", data=True, eval=True,
      must_match="which field is the text"),
    F("max_bad_fraction", 0.01, "fraction of malformed jsonl lines tolerated (skipped and reported)",
      Range(0, 1), data=True, eval=True,
      safe="a tolerance for malformed records, not which records train"),
    F("user_role", "User", "chat role name for user turns", data=True, eval=True,
      must_match="the chat text"),
    F("assistant_role", "Assistant", "chat role name for replies", data=True, eval=True,
      must_match="the chat text"),
    F("system_role", "System", "chat role name for system prompts", data=True, eval=True,
      must_match="the chat text"),
    F("chat_template", "g1", "how chat records are written: g1 (RWKV G1: cleaned turns, think, "
      "tool calls), world, or raw (content as given: rwkvft's format before templates)",
      choices=tuple(TEMPLATES), data=True, eval=True,
      must_match="how chat records are rendered"),
    F("train_on_think", True, "1 = train the think text of replies, 0 = only the answer after "
      "</think>", data=True, eval=True,
      must_match="which tokens carry loss"),
    F("data_split", "train", "Hugging Face dataset split to read (org/name, save_to_disk folders, "
      "data files)", data=True, eval=True,
      must_match="the data"),
    F("data_config", "", "Hugging Face dataset configuration (subset) name for org/name",
      data=True, eval=True,
      must_match="the data"),
    # schedule
    F("epoch_steps", 1000, "micro-batches per device per epoch; an epoch is epoch_steps x "
      "micro_bsz x devices samples", Range(1), data=True,
      must_match="the steps per epoch (the data position)"),
    F("epoch_count", 1, "number of epochs to train", Range(1),
      safe="how long the run goes on"),
    F("epoch_begin", 0, "epoch number to start from (file numbering, LR position and data)", Range(0),
      must_match="the epoch numbering"),
    F("epoch_save", 1, "save the adapter every N epochs (and always at the end)", Range(1),
      safe="which epochs are saved"),
    F("my_exit", 0, "stop after this many epochs (as if interrupted; continue with --resume); 0 = off",
      Range(0, hint="0 = off"),
      safe="where the run stops"),
    F("lr_init", 2e-5, "peak learning rate (default 2e-5, good for MiSS; at most 1e-4; --peft "
      "state: 1e-2)", Range(0, 1, lo_open=True, hint="2e-5 is a good MiSS default"),
      must_match="the schedule"),
    F("lr_final", -1.0, "final learning rate; -1 = same as lr_init (constant)",
      Range(0, 1, also=(-1,), hint="-1 = same as --lr_init"),
      must_match="the schedule"),
    F("warmup_steps", 0, "linear warm-up optimizer steps",
      Range(0, also=(-1,), hint="-1 or 0 = no warm-up"),
      must_match="the schedule"),
    F("lr_schedule", "cos_decay", "cos_decay (cosine from lr_init to lr_final) or wsd "
      "(warmup-stable-decay)", choices=SCHEDULES,
      must_match="the schedule"),
    F("wsd_decay_frac", 0.1, "wsd: fraction of all steps spent in the final decay",
      Range(0, 1, lo_open=True),
      must_match="the schedule"),
    F("accumulate_grad_batches", 1, "micro-batches per optimizer step", Range(1),
      must_match="the effective batch"),
    F("grad_clip", 1.0, "gradient norm clipping (0 = off)", Range(0, hint="0 = no clipping"),
      must_match="the update"),
    # optimizer
    F("beta1", 0.9, "AdamW beta1", Range(0, 1, hi_open=True, hint="0.9 is the usual value"),
      must_match="the optimiser"),
    F("beta2", 0.99, "AdamW beta2", Range(0, 1, hi_open=True, hint="0.99 is the usual value"),
      must_match="the optimiser"),
    F("adam_eps", 1e-8, "AdamW epsilon", Range(0, 1, lo_open=True, hint="1e-8 is the usual value"),
      must_match="the optimiser"),
    F("weight_decay", 0.0, "AdamW weight decay (applied to matrices only)", Range(0, hint="0 = off"),
      must_match="the optimiser"),
    # hardware
    F("accelerator", "auto", "auto, cpu or gpu",
      safe="the device (same arithmetic)"),
    F("devices", 1, "number of devices (processes)", Range(1),
      must_match="the effective batch and each rank's data"),
    F("num_nodes", 1, "number of machines", Range(1),
      must_match="the effective batch"),
    F("dist_timeout", 600.0, "seconds to wait for the other machines to join (--num_nodes > 1)",
      Range(0, lo_open=True, hint="seconds to wait for the other nodes"),
      safe="how long to wait for other nodes"),
    F("precision", "", "fp32, tf32, fp16 or bf16 (default: bf16 on GPU, fp32 on CPU)",
      choices=PRECISIONS,
      must_match="the arithmetic of every step"),
    F("strategy", "auto", "Lightning strategy: " + ", ".join(STRATEGIES), choices=STRATEGIES,
      must_match="how the optimiser state is kept (DeepSpeed vs DDP checkpoints)"),
    F("grad_cp", 0, "1 = activation checkpointing per block (less memory, slower)", Range(0, 1),
      safe="recomputation in the backward pass (same gradients)"),
    F("compile", False, "torch.compile (inductor) each block: fuses the elementwise work between "
      "the matmuls; the first step compiles (time printed); the WKV op stays eager",
      safe="compiled or eager blocks (same arithmetic to float rounding)"),
    F("op", "auto", "WKV operator: auto (GPU: cuda, else fla, else chunked), chunked, reference "
      "(CPU); cuda, fla, triton (GPU)",
      safe="the WKV kernel (same arithmetic)"),
    F("quant", "none", "store the frozen base weights as none, int8 or nf4 (needs the quant extra: "
      "bitsandbytes)", choices=QUANT_MODES,
      must_match="the frozen base weights (quantised)"),
    # long samples in chunks carrying the RNN state (training/infctx.py)
    F("train_type", "none", "none, or infctx: run each sample as chunks of --chunk_ctx tokens "
      "carrying the state (memory follows the chunk, not ctx_len)",
      must_match="the gradient (infctx carries state between chunks)"),
    F("chunk_ctx", 512, "infctx chunk length in tokens (< ctx_len, a multiple of 16)",
      Range(1, hint="infctx chunk length, e.g. 512"),
      must_match="where the state is carried (and cut, with truncated bptt)"),
    F("infctx_bptt", "full", "infctx gradients: full (exact, = unchunked; default) or truncated "
      "(state detached between chunks, as RWKV-PEFT)",
      must_match="the gradient (full or truncated)"),
    # peft
    F("peft", "miss", "method: " + ", ".join(peft_registry.names()) + " (none = full fine-tuning)",
      must_match="the method"),
    F("peft_config", "{}", "method options as JSON, e.g. '{\"r\":64}' or '{\"r\":8,\"lora_alpha\":32}'; "
      "'{\"layers\":\"12-23\"}' (or [0,1,2]) adapts only those layers",
      must_match="the adapter's shape and options"),
    F("train_parts", [], "extra trainable parts: ln, time, emb, head",
      must_match="which full tensors train"),
    F("adapter_format", "pth", "adapter file format: pth or safetensors",
      safe="the file format of saves"),
    F("adapter_init", "", "start the adapter from this one (rwkv-N.pth, RWKV-PEFT file or HF peft "
      "folder, e.g. RWKV-PEFT's {proj_dir}-adapter) instead of the method's init",
      safe="the start of a new run; a resume starts from last.ckpt"),
    # outputs
    F("merge_output", "", "also write the merged bf16 model to this path at the end",
      safe="what is written at the end"),
    F("resume", False, "continue the run in --proj_dir from its last save",
      safe="the mode itself"),
    F("overwrite", False, "start a new run in a --proj_dir that already holds one",
      safe="the mode itself"),
    F("wandb", "", "Weights & Biases project name (needs the wandb extra)",
      safe="logging"),
    F("tensorboard", False, "also log to TensorBoard in proj_dir/tb (needs the tensorboard extra)",
      safe="logging"),
    F("random_seed", 0, "seed for initialisation and data sampling", Range(0, 2**32 - 1), data=True,
      must_match="the sample order"),
    F("num_workers", 0, "DataLoader worker processes",
      Range(0, hint="0 = load data in the training process"),
      must_match="the loader processes that draw random windows"),
    F("head_chunk", 2048, "tokens per chunk of the output head + loss (bounds logits memory)",
      Range(1), eval=True,
      safe="the loss is computed in chunks of this many tokens (same value)"),
    F("progress", True, "show a progress bar", data=True,
      safe="the progress bar"),
    # validation, samples, step saves and budgets (training/validation.py, training/steps.py)
    F("val_file", "", "validation data, read exactly like --data_file (same --data_type, masks); "
      "loss/ppl logged",
      safe="what is measured, not trained"),
    F("val_split", 0.0, "hold out this fraction of the training documents for validation (seeded "
      "by --random_seed; never trained on)",
      Range(0, 1, hi_open=True, hint="a fraction of the documents, e.g. 0.05"),
      must_match="which documents train"),
    F("val_every", 0, "validate every N optimizer steps as well as at each epoch end (0 = epoch "
      "ends only)", Range(0, hint="0 = validate at epoch ends only"),
      safe="how often it is measured"),
    F("save_best", False, "keep rwkv-best.pth (+ adapter_config.json): the adapter with the lowest "
      "validation loss",
      safe="which save is kept"),
    F("sample_prompts", "", "file of prompts (one a line, or jsonl chats): greedy continuations "
      "into samples.md at every save",
      safe="what is shown at saves"),
    F("sample_tokens", 48, "tokens generated per prompt for --sample_prompts", Range(1, 4096),
      safe="what is shown at saves"),
    F("save_every_steps", 0, "also save rwkv-step{S}.pth and last.ckpt every N optimizer steps "
      "(resumable mid-epoch)", Range(0, hint="0 = save at epoch ends only"),
      safe="how often it saves"),
    F("keep_last", 0, "keep only the newest K step saves (epoch saves and rwkv-best are never "
      "deleted; 0 = all)", Range(0, hint="0 = keep every step save"),
      safe="how many saves are kept"),
    F("max_steps", 0, "end the run after N optimizer steps (saved and resumable; 0 = no limit)",
      Range(0, hint="0 = no limit"),
      safe="where the run stops"),
    F("max_tokens", 0, "end the run after this many training tokens (samples x ctx_len; 0 = no "
      "limit)", Range(0, hint="0 = no limit"),
      safe="where the run stops"),
    # benchmark tasks at every save (evaluation/during_training.py; needs the eval extra)
    F("eval_tasks", "", "lm-eval task names (comma-separated): score every saved adapter, logged in "
      "loss.jsonl and loss.png (pip install 'rwkvft[eval]')",
      safe="what is measured at saves"),
    F("eval_limit", 0.0, "documents per task for --eval_tasks (0 = the whole task)",
      Range(0, hint="documents per task; 0 = the whole task"),
      safe="what is measured at saves"),
    F("eval_include_path", "", "folder of your own lm-eval task YAMLs for --eval_tasks",
      safe="what is measured at saves"),
    F("best_metric", "", "with --save_best: keep the adapter with the best TASK/METRIC of "
      "--eval_tasks (e.g. hellaswag/acc_norm) instead of the lowest val loss",
      safe="which save is kept"),
    # preference tuning (training/preference.py, data/preference.py)
    F("objective", "sft", "sft (default: next-token loss) or a preference objective on "
      "prompt/chosen/rejected pairs: dpo, orpo, simpo (README \"Preference tuning\")",
      choices=OBJECTIVES,
      must_match="the preference objective"),
    F("beta", -1.0, "DPO/SimPO temperature (-1 = the objective's usual value: DPO 0.1, SimPO 2.0)",
      Range(0, lo_open=True, also=(-1,), hint="-1 = the objective's usual value (DPO 0.1, SimPO 2.0)"),
      must_match="the objective's temperature"),
    F("dpo_loss", "sigmoid", "DPO variant: sigmoid (DPO), hinge, ipo, robust (with "
      "--label_smoothing)", choices=DPO_LOSSES,
      must_match="the DPO variant"),
    F("label_smoothing", 0.0, "robust DPO / SimPO: the assumed fraction of flipped preference "
      "labels, [0, 0.5)", Range(0, 0.5, hi_open=True, hint="0 = trust every label"),
      must_match="the preference loss"),
    F("simpo_gamma", 0.5, "SimPO's target reward margin gamma", Range(0, hint="0.5 is TRL's default"),
      must_match="the SimPO margin"),
    F("orpo_lambda", 0.1, "ORPO's weight of the odds-ratio term (its NLL term has weight 1)",
      Range(0, lo_open=True, hint="0.1 is TRL's default"),
      must_match="the ORPO weight"),
    F("sft_weight", 0.0, "add this x the chosen answers' cross-entropy to a preference loss "
      "(RPO / CPO-SimPO)", Range(0, hint="0 = off"),
      must_match="the loss"),
    F("ref_logps", "", "DPO: the reference model's log-probs written by `rwkvft prepare --ref_logps` "
      "(no reference forward while training: for full fine-tuning, quantised bases, multi-GPU); checked "
      "against --load_model, --data_file and the rendering flags",
      must_match="the reference of the DPO loss"),
]

# Flags RWKV-PEFT parses that have no effect here (most are dead there too): accepted so old
# scripts run, and each one given prints a one-line note saying why it is ignored.
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

# RWKV-PEFT method names with no method here: what to use instead (aliases such as bone and
# disha, which are MiSS, are the method records' own: adapters/miss.py)
FOREIGN_METHODS = {
    "adalora": " (RWKV-PEFT maps adalora but never tested it; --peft lora is the nearest)",
    "prefix": " (RWKV-PEFT maps prefix but never tested it; --peft state tunes a prefix-like state)",
    "lisa": " (LISA left RWKV-PEFT in 2024; use --peft miss or lora)",
}
