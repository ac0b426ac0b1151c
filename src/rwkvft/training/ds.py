"""DeepSpeed (--strategy deepspeed_*): the Lightning strategy as rwkvft needs it, the full
parameters under ZeRO-3, and the folder DeepSpeed writes for last.ckpt.

Lightning's DeepSpeed defaults are wrong for a mostly frozen model (shared/specs/gpu_playbook.md §4):
- its checkpoint ignores `on_save_checkpoint`'s trimmed state_dict and holds the whole frozen
  base (GBs per save), unless `exclude_frozen_parameters`;
- with `accumulate_grad_batches` G, Lightning divides the loss by G and DeepSpeedEngine.backward
  divides it again: gradients G times too small (clipping and Adam's eps see them).
- under ZeRO-3 a parameter over `stage3_param_persistence_threshold` elements lives in shards:
  reading it outside the engine's forward gives an empty tensor until it is gathered.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

# the file of a DeepSpeed checkpoint folder that holds Lightning's client state (and the module
# states under ZeRO-1/2); ZeRO-3 names it per rank
_TAG = "checkpoint"  # Lightning's tag: <last.ckpt>/checkpoint/
_MODEL_STATES = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")


def is_deepspeed(strategy: str) -> bool:
    return strategy.startswith("deepspeed")


def deepspeed_strategy(name: str):
    """The registered Lightning strategy `name` (its stage and offload settings) as an
    `RwkvftDeepSpeed`: frozen weights left out of checkpoints, gradients scaled once."""
    from lightning.pytorch.strategies import StrategyRegistry
    init = dict(StrategyRegistry[name]["init_params"])
    return _strategy_class()(exclude_frozen_parameters=True, **init)


def _strategy_class():
    from lightning.pytorch.strategies import DeepSpeedStrategy

    class RwkvftDeepSpeed(DeepSpeedStrategy):
        def backward(self, closure_loss, optimizer, *args, **kwargs):
            # Lightning has already divided the loss by accumulate_grad_batches
            return super().backward(closure_loss, optimizer, *args, scale_wrt_gas=False, **kwargs)

    return RwkvftDeepSpeed


def full_params(trainer, params):
    """Context: `params` whole on every rank (ZeRO-3 gathers its shards; a no-op otherwise).
    Collective under ZeRO-3: every rank must enter it."""
    from lightning.pytorch.strategies import DeepSpeedStrategy
    strategy = getattr(trainer, "strategy", None)
    if not isinstance(strategy, DeepSpeedStrategy) or not strategy.zero_stage_3:
        return contextlib.nullcontext()
    import deepspeed
    return deepspeed.zero.GatheredParameters(list(params), modifier_rank=None)


# ---------------------------------------------------------------- last.ckpt as a folder
def read_checkpoint_folder(path: Path) -> dict:
    """What --resume needs of a DeepSpeed last.ckpt folder, in the layout of a Lightning
    checkpoint file: the client state (global_step, loops, callbacks...) and a "state_dict"
    of the saved trainable tensors. Under ZeRO-3 the tensors are shards, so only their full
    shapes are known: "state_dict" then holds empty tensors of those shapes (meta device)."""
    folder = Path(path) / _TAG
    states = next((folder / n for n in _MODEL_STATES if (folder / n).is_file()), None)
    if states is None:
        raise FileNotFoundError(f"no {_MODEL_STATES[0]} in {folder}")
    ckpt = torch.load(states, map_location="cpu", weights_only=True)
    shapes = {}
    for group in ckpt.get("param_shapes") or []:
        shapes.update(group)
    module = ckpt.get("module") or {}
    sd = {k: (module[k] if k in module and module[k].numel() == torch.Size(s).numel()
              else torch.empty(s, device="meta")) for k, s in shapes.items()}
    out = {k: v for k, v in ckpt.items() if k not in ("module", "param_shapes", "optimizer")}
    out["state_dict"] = sd
    return out
