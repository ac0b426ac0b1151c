"""The DataConfig that `rwkvft train`'s flags describe: one reading of the data flags for
training, --val_file and `rwkvft eval`. Every flag declared `data=True` is copied by name."""
from __future__ import annotations

from pathlib import Path

from ..data.datasets import DataConfig
from ..data.from_flags import resolve_data_type
from .record import data_flags


def data_config(cfg, data_file: str = "") -> DataConfig:
    """The validated DataConfig that reads `data_file` (default --data_file) exactly as training
    reads it (vocab_size 0: filled in from the checkpoint). --val_file and `rwkvft eval` go
    through here too, so they see the same tokens and masks."""
    data_type = resolve_data_type(cfg)
    dataload = cfg.dataload
    if dataload == "auto":  # records are documents; token streams are windows
        dataload = "pad" if data_type in ("jsonl", "sft", "hf") else "get"
    data_file = data_file or cfg.data_file
    if data_type == "binidx" and Path(data_file).suffix in (".bin", ".idx"):
        data_file = str(Path(data_file).with_suffix(""))
    # every flag declared `data=True` is a DataConfig field of the same name (config/flags.py)
    copied = {name: getattr(cfg, name) for name in (f.name for f in data_flags())}
    copied["sft_field"] = tuple(cfg.sft_field) if cfg.sft_field else None
    dcfg = DataConfig(data_file=data_file, data_type=data_type, dataload=dataload, vocab_size=0,
                      **copied)
    dcfg.validate()
    return dcfg
