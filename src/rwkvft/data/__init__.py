"""Data: tokenizer, binidx files, `rwkvft prepare`, readers for every --data_type, training datasets.

`build_dataset(DataConfig(...), rank, world_size)` is the entry point for the trainer; see
`rwkvft.data.datasets` for what an epoch and each --dataload / --loss_mask mode mean.
"""
from __future__ import annotations

from pathlib import Path

from .datasets import DataConfig, RWKVDataset, build_dataset

# the bundled demo data (chat, instruction and text records; see sample/README.md)
SAMPLE_JSONL = Path(__file__).with_name("sample") / "sample.jsonl"

__all__ = ["DataConfig", "RWKVDataset", "build_dataset", "SAMPLE_JSONL"]
