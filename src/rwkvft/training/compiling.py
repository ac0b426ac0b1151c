"""`rwkvft train --compile`: the blocks compiled before fit (models/compile.py), and the time
the compiler took, said once after the first step (torch.compile works lazily, on first use)."""
from __future__ import annotations

import lightning as L


def compile_for_training(cfg, acc: str, model, rank0: bool = True) -> str:
    """Compile the model's blocks when --compile is on; one line for the log, also printed as
    a note ('' without the flag)."""
    if not cfg.compile:
        return ""
    from ..models.compile import compile_blocks
    from ..utils import note
    line = compile_blocks(model, "cuda" if acc == "gpu" else "cpu", cfg.strategy)
    if rank0:
        note(line)
    return line


def compile_callbacks(cfg, log) -> list:
    """[CompileTime] under --compile, else []."""
    return [CompileTime(log)] if cfg.compile else []


class CompileTime(L.Callback):
    """After the first training step: how long compiling took (forward and backward graphs)."""

    def __init__(self, log):
        from ..models.compile import compile_seconds
        self.runlog = log
        self.done = False
        self.before = compile_seconds()  # the process total: earlier compiles are not this run's

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.done:
            return
        self.done = True
        from ..models.compile import compile_seconds
        line = f"--compile: {compile_seconds() - self.before:.1f} s compiling in the first step"
        self.runlog.line(line)
        if trainer.is_global_zero:
            from ..utils import note
            note(line)
