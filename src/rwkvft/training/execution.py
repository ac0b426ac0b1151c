"""Where and how a run executes: accelerator and precision (rwkvft.hardware plus the DeepSpeed
checks), the WKV op, and the Lightning strategy."""
from __future__ import annotations

from ..errors import Checks, UserError
from ..utils import note
from . import ds, nodes


def resolve_hardware(cfg) -> tuple[str, str]:
    """(lightning accelerator, lightning precision) with clear errors for mismatches."""
    from ..hardware import resolve_device
    checks = Checks()   # a CPU-only machine given the tutorial's GPU flags hears of them all
    hw = checks.run(resolve_device, cfg.accelerator, cfg.precision)
    if cfg.strategy.startswith("deepspeed"):
        if hw is None or not hw.on_gpu:
            checks.add(f"--strategy {cfg.strategy} needs NVIDIA GPUs; on CPU use "
                       f"--strategy ddp (or auto for one process)")
        else:
            try:
                import deepspeed  # noqa: F401
            except ImportError:
                checks.add(f"--strategy {cfg.strategy} needs DeepSpeed: pip install 'rwkvft[deepspeed]'")
    checks.raise_if_any()
    return hw.accelerator, hw.lightning_precision


def check_op_name(op: str, acc: str) -> None:
    """--op checks that need no model: a known name, and a GPU op only with a GPU. Which ops
    run a given model version is decided by resolve_wkv_op once the version is known."""
    from ..kernels import CPU_OPS, GPU_OPS
    if op != "auto" and op not in CPU_OPS + GPU_OPS:
        raise UserError(f"unknown --op {op!r}; choose one of auto, {', '.join(CPU_OPS + GPU_OPS)}")
    if op in GPU_OPS and acc != "gpu":
        raise UserError(f"--op {op} needs an NVIDIA GPU; use --op chunked (or auto) on CPU")


def resolve_wkv_op(cfg, acc: str, version: str) -> str:
    """The WKV op for this model version on this accelerator (--op auto falls back with a note)."""
    from ..kernels import resolve_op
    op, fallback = resolve_op(cfg.op, acc == "gpu", version)
    if fallback:  # one line saying why --op auto fell back (once, not from every rank)
        note(fallback)
    return op


def lightning_strategy(cfg):
    """The Lightning strategy; DDP must not broadcast a quantized base (GBs of buffers) every
    step, DeepSpeed needs rwkvft's settings (ds.py)."""
    if cfg.num_nodes > 1:
        return nodes.multi_node_strategy(cfg)
    if ds.is_deepspeed(cfg.strategy):
        return ds.deepspeed_strategy(cfg.strategy)
    # "auto" with several devices is DDP too (Lightning picks DDPStrategy with no arguments)
    is_ddp = cfg.strategy in ("ddp", "ddp_spawn") or (cfg.strategy == "auto" and cfg.devices > 1)
    if cfg.quant != "none" and is_ddp:
        from lightning.pytorch.strategies import DDPStrategy
        return DDPStrategy(broadcast_buffers=False,
                           start_method="spawn" if cfg.strategy == "ddp_spawn" else "popen")
    return cfg.strategy
