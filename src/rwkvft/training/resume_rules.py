"""Which settings `--resume` may change: one table over every TrainConfig field.

A resumed run must optimise the same thing as the run it continues (same model, adapter,
data and its order, loss, optimiser and schedule), or its result would silently be neither run.
Every field of TrainConfig is in exactly one of the two tables below (a test checks it), so a
new flag cannot slip through unclassified: MUST_MATCH flags are compared with the run's
train_config.json and a change is refused; SAFE flags change only where, how fast, how often or
how long, never what is optimised.
"""
from __future__ import annotations

from pathlib import Path

# flag -> why it must match
MUST_MATCH = {
    "objective": "the preference objective", "beta": "the objective's temperature",
    "dpo_loss": "the DPO variant", "label_smoothing": "the preference loss",
    "simpo_gamma": "the SimPO margin", "orpo_lambda": "the ORPO weight", "sft_weight": "the loss", "ref_logps": "the reference of the DPO loss",
    "load_model": "the base model being adapted",
    "peft": "the method", "peft_config": "the adapter's shape and options",
    "train_parts": "which full tensors train", "quant": "the frozen base weights (quantised)",
    "data_file": "the data", "data_type": "how the data is read", "dataload": "how samples are cut",
    "loss_mask": "which tokens carry loss", "ctx_len": "the sample length",
    "micro_bsz": "the batch", "sft_field": "which fields are prompt and response",
    "window_sampling": "which windows are drawn", "long_docs": "how long documents are cut",
    "group_by_length": "the batch order", "text_field": "which field is the text",
    "user_role": "the chat text", "assistant_role": "the chat text", "system_role": "the chat text",
    "val_split": "which documents train", "random_seed": "the sample order",
    "num_workers": "the loader processes that draw random windows",
    "epoch_steps": "the steps per epoch (the data position)", "epoch_begin": "the epoch numbering",
    "accumulate_grad_batches": "the effective batch",
    "devices": "the effective batch and each rank's data", "num_nodes": "the effective batch",
    "strategy": "how the optimiser state is kept (DeepSpeed vs DDP checkpoints)",
    "precision": "the arithmetic of every step",
    "lr_init": "the schedule", "lr_final": "the schedule", "lr_schedule": "the schedule",
    "warmup_steps": "the schedule", "wsd_decay_frac": "the schedule",
    "grad_clip": "the update", "beta1": "the optimiser", "beta2": "the optimiser",
    "adam_eps": "the optimiser", "weight_decay": "the optimiser",
    "train_type": "the gradient (infctx carries state between chunks)",
    "chunk_ctx": "where the state is carried (and cut, with truncated bptt)",
    "infctx_bptt": "the gradient (full or truncated)",
    "chat_template": "how chat records are rendered", "train_on_think": "which tokens carry loss",
    "data_split": "the data", "data_config": "the data",
}

# flag -> why it may change on resume
SAFE = {
    "proj_dir": "the folder being resumed",
    "my_testing": "restates the checkpoint (checked against it)",
    "n_layer": "restates the checkpoint (checked against it)",
    "n_embd": "restates the checkpoint (checked against it)",
    "vocab_size": "restates the checkpoint (checked against it)",
    "head_size_a": "restates the checkpoint (checked against it)",
    "max_bad_fraction": "a tolerance for malformed records, not which records train",
    "epoch_count": "how long the run goes on", "max_steps": "where the run stops",
    "max_tokens": "where the run stops", "my_exit": "where the run stops",
    "epoch_save": "which epochs are saved", "save_every_steps": "how often it saves",
    "keep_last": "how many saves are kept", "save_best": "which save is kept",
    "adapter_format": "the file format of saves", "merge_output": "what is written at the end",
    "adapter_init": "the start of a new run; a resume starts from last.ckpt",
    "accelerator": "the device (same arithmetic)", "op": "the WKV kernel (same arithmetic)",
    "grad_cp": "recomputation in the backward pass (same gradients)",
    "head_chunk": "the loss is computed in chunks of this many tokens (same value)",
    "dist_timeout": "how long to wait for other nodes",
    "val_file": "what is measured, not trained", "val_every": "how often it is measured",
    "sample_prompts": "what is shown at saves", "sample_tokens": "what is shown at saves",
    "eval_tasks": "what is measured at saves", "eval_limit": "what is measured at saves",
    "eval_include_path": "what is measured at saves", "best_metric": "which save is kept",
    "wandb": "logging", "tensorboard": "logging", "progress": "the progress bar",
    "resume": "the mode itself", "overwrite": "the mode itself",
}


def check_resume_flags(cfg, proj: Path) -> None:
    """Refuse a --resume whose MUST_MATCH settings differ from the run's train_config.json."""
    from .safety import check_resume_config
    check_resume_config(cfg, proj, tuple(MUST_MATCH))
