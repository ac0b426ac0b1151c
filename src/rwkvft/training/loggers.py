"""--wandb / --tensorboard: checked before anything is loaded, built for the trainer."""
from __future__ import annotations

from ..errors import UserError


def check_loggers(cfg) -> None:
    """--wandb / --tensorboard need their packages; say so before anything is loaded."""
    import importlib.util
    if cfg.wandb and importlib.util.find_spec("wandb") is None:
        raise UserError("--wandb needs the wandb package: pip install 'rwkvft[wandb]'")
    if cfg.tensorboard and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise UserError("--tensorboard needs the tensorboard package: pip install 'rwkvft[tensorboard]'")


def make_loggers(cfg, proj):
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
    loggers = []
    if cfg.wandb:
        loggers.append(WandbLogger(project=cfg.wandb, save_dir=str(proj)))
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(proj), name="tb"))
    return loggers or False
