"""--data_type auto: a data file's type from its name, for training, --val_file, `rwkvft eval`
and `bench --lengths FILE`. `cfg` is a TrainConfig (or anything with data_type and data_file)."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .hf_datasets import looks_like_hf
from .readers import DATA_TYPES


def resolve_data_type(cfg) -> str:
    """--data_type auto: from the file name (the tutorial always names it explicitly)."""
    if cfg.data_type != "auto":
        return cfg.data_type
    p = Path(cfg.data_file)
    suffix = p.suffix.lower()
    if looks_like_hf(cfg.data_file):
        return "hf"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".npy":
        return "numpy"
    if suffix in (".parquet",):
        return "sft"
    if suffix in (".txt", ".md"):
        return "utf-8"
    if suffix in (".bin", ".idx") or (Path(f"{p}.bin").exists() and Path(f"{p}.idx").exists()):
        return "binidx"
    raise UserError(f"cannot tell the format of --data_file {p}; pass --data_type "
                    f"({', '.join(DATA_TYPES)})")
