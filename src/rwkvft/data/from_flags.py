"""The DataConfig that `rwkvft train`'s flags describe: one reading of --data_type / --dataload
for training, --val_file, `rwkvft eval` and `bench --lengths FILE`. `cfg` is a TrainConfig (or
anything with its data fields)."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .datasets import DataConfig
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
    dcfg = DataConfig(data_file=data_file, data_type=data_type, ctx_len=cfg.ctx_len,
                      vocab_size=0, micro_bsz=cfg.micro_bsz, epoch_steps=cfg.epoch_steps,
                      dataload=dataload, loss_mask=cfg.loss_mask, random_seed=cfg.random_seed,
                      sft_field=tuple(cfg.sft_field) if cfg.sft_field else None,
                      window_sampling=cfg.window_sampling, long_docs=cfg.long_docs,
                      user_role=cfg.user_role, assistant_role=cfg.assistant_role,
                      system_role=cfg.system_role, text_field=cfg.text_field,
                      chat_template=cfg.chat_template, train_on_think=cfg.train_on_think,
                      data_split=cfg.data_split, data_config=cfg.data_config,
                      max_bad_fraction=cfg.max_bad_fraction, progress=cfg.progress,
                      group_by_length=cfg.group_by_length)
    dcfg.validate()
    return dcfg
