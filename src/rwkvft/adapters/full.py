"""`--peft none`: full fine-tuning. Every parameter trains (fp32 master weights: the model is
loaded in fp32 and nothing is frozen, so nothing is cast down); the saved rwkv-{epoch}.pth is
a whole model in the official layout (the base's keys and shapes), which the `rwkv` package,
RWKV Runner and Ai00 load as they load the base, and which `rwkvft merge` passes through.
"""
from __future__ import annotations

import contextlib
import copy

from torch import nn

from ..models.schema import LAYER0_UNUSED
from .config import AdapterConfig
from .method import PeftMethod
from .reference import Reference

# AdamW keeps two fp32 moments per parameter beside the fp32 weight and its gradient.
BYTES_PER_PARAM = 16


def parse(d: dict) -> AdapterConfig:
    return AdapterConfig(method="none")


def inject(model: nn.Module, cfg: AdapterConfig) -> list[str]:
    # layer 0's v0/v1/v2 (present in some x070 files) are never used: training them would only
    # give DDP unused parameters; they are still saved with the rest of the model
    return [n for n, _ in model.named_parameters() if not LAYER0_UNUSED.search(n)]


def reference(model: nn.Module, cfg=None) -> Reference:
    """Full fine-tuning changes every weight, so the reference policy is a frozen copy of the
    model as it is now (before training): one more model's worth of memory."""
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    return Reference(frozen, contextlib.nullcontext)


def memory_note(n_params: int, strategy: str) -> str:
    """The GPU warning: what full fine-tuning needs beyond the model, and how to fit it."""
    gib = n_params * BYTES_PER_PARAM / 2**30
    where = "" if strategy.startswith(("deepspeed_stage_2", "deepspeed_stage_3")) else (
        "; to fit it, shard the optimizer state with --strategy deepspeed_stage_2 (or "
        "deepspeed_stage_3 to shard the weights too, _offload variants to use CPU memory)")
    return (f"warning: --peft none trains all {n_params:,} parameters: fp32 weights, gradients "
            f"and AdamW moments take about {gib:.1f} GiB ({BYTES_PER_PARAM} bytes/parameter) per "
            f"unsharded copy{where}")


METHOD = PeftMethod(name="none", keys={}, parse=parse, inject=inject, full_model=True, reference=reference,
                    cannot="a full fine-tune is a whole model, not an adapter: write it with "
                           "rwkvft merge (--format pth / st) or export --format hf",
                    summary="full fine-tuning: every parameter trains; saves a whole model")
