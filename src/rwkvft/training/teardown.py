"""The end of a run: a signal stop reported, ranks checked to agree, the optional merged model,
and the DDP process group closed."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError
from .interrupt import Interrupted
from .run_dir import rank_zero


def report_interrupt(cfg, log, result, name: str) -> None:
    """After a clean stop on a signal: say what was saved and how to continue; exit 130."""
    import sys
    saved = result.adapters[-1] if result.adapters else None
    log.line(f"interrupted by {name}; saved {saved} and last.ckpt")
    if rank_zero():
        print(f"rwkvft: stopped on {name}: saved {saved} and {Path(cfg.proj_dir) / 'last.ckpt'}; "
              f"continue with the same command plus --resume", file=sys.stderr, flush=True)
    raise Interrupted()


def check_ranks_in_sync(trainer, model, trainable, log) -> None:
    """With several processes, every rank must end with the same adapter; record it."""
    if trainer.world_size <= 1:
        return
    params = dict(model.named_parameters())
    empty = [n for n in trainable if params[n].numel() == 0]
    if empty:  # zeros compare equal on every rank: an ungathered ZeRO-3 shard must not pass
        raise UserError(f"the trained tensors {empty[:3]} are empty on this rank; please report this")
    local = torch.tensor([sum(float(params[n].detach().double().sum()) for n in trainable)],
                         dtype=torch.float64)
    gathered = trainer.strategy.all_gather(local.to(trainer.strategy.root_device)).flatten().cpu()
    sums = [float(x) for x in gathered]
    log.line(f"adapter checksum per rank: {json.dumps(sums)}")
    if max(sums) - min(sums) > 1e-9 * max(1.0, max(abs(s) for s in sums)):
        raise UserError(f"ranks ended with different adapters (checksums {sums}); please report this")


def merge_to_file(base_sd, adapter_sd, acfg, output):
    from ..adapters.merge import merge_state_dict
    from ..formats import write_state_dict

    adapter_sd = {k: v.detach().float().cpu() for k, v in adapter_sd.items()}
    merged = merge_state_dict(base_sd, adapter_sd, acfg)
    write_state_dict(merged, output, dtype=torch.bfloat16)
    return Path(output)


def close_process_group() -> None:
    """Destroy the DDP process group Lightning opened (it leaves it open): left to interpreter
    exit, gloo's threads are torn down in an arbitrary order and the process sometimes aborts
    ("terminate called without an active exception", status -6) after a finished run."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
