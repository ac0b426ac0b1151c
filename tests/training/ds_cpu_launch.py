"""Test-only launcher: the real `rwkvft train` under Lightning's DeepSpeed strategies on CPU.

    python tests/training/ds_cpu_launch.py train --strategy deepspeed_stage_2 --devices 2
        --accelerator cpu ...

rwkvft (rightly) refuses DeepSpeed without NVIDIA GPUs, and so do Lightning and DeepSpeed. None
of the code under test (rwkvft's saver, resume, adapters, Lightning's DeepSpeedStrategy and the
DeepSpeed engine, ZeRO 1/2/3) depends on the accelerator, so this launcher removes exactly the
four refusals (shared/specs/gpu_on_cpu.md §4.1) and nothing else, then calls rwkvft's own CLI.
Lightning re-executes this same script for rank 1, so every rank gets the same patches.

It lives in tests/ on purpose: a user cannot reach it, and `rwkvft train` keeps saying that
DeepSpeed needs GPUs (bf16 maths, fused optimizers and NCCL are what DeepSpeed is for).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

# DeepSpeed picks its accelerator at import; on a machine with no GPU it would guess CPU anyway,
# but saying so keeps a machine that has one from running this on it.
os.environ["DS_ACCELERATOR"] = "cpu"


def _patch() -> None:
    import importlib

    import deepspeed
    import lightning.pytorch.strategies.deepspeed as pl_ds
    from lightning.pytorch.strategies import DDPStrategy

    from rwkvft.training import run

    # 0. DeepSpeed's CPU backend JIT-builds a shared-memory all-reduce (deepspeed_shm_comm, ~110 s
    #    of g++ on first use). Without it DeepSpeed falls back to torch.distributed (gloo), which
    #    is what the GPU path's NCCL stands in for here.
    # (import_module: `deepspeed.comm.torch` as an attribute is the torch package itself)
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None

    # 1. rwkvft: resolve the hardware as for a CPU run (the DeepSpeed import check still runs).
    real_resolve = run.resolve_hardware

    def resolve_hardware(cfg):
        import deepspeed  # noqa: F401  (what resolve_hardware checks for a deepspeed strategy)
        return real_resolve(dataclasses.replace(cfg, strategy="auto"))
    run.resolve_hardware = resolve_hardware

    # 2. Lightning: "The DeepSpeed strategy is only supported on CUDA GPUs".
    pl_ds.DeepSpeedStrategy.setup_environment = DDPStrategy.setup_environment
    # 3. Lightning: CPU devices have no index ([None, None] "don't match the local rank values").
    pl_ds._validate_device_index_selection = lambda devices: None
    # 4. DeepSpeed reads the local rank from args.device_rank (None on CPU) or LOCAL_RANK.
    real_init = deepspeed.initialize

    def initialize(*a, args=None, **kw):
        if args is not None and getattr(args, "device_rank", None) is None:
            args = argparse.Namespace(**{**vars(args), "device_rank": int(os.environ.get("LOCAL_RANK", 0))})
        return real_init(*a, args=args, **kw)
    deepspeed.initialize = initialize


if __name__ == "__main__":
    _patch()
    from rwkvft.cli import main
    sys.exit(main(sys.argv[1:]))
