"""Hugging Face datasets (--data_type hf): a save_to_disk folder, a parquet file and other files
`datasets` reads give the same batches as the same records in jsonl; a Hub name that is neither
cached nor reachable is one error line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rwkvft.data import build_dataset
from rwkvft.data.datasets import DataConfig

datasets = pytest.importorskip("datasets")

RECORDS = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}]},
    {"messages": [{"role": "user", "content": "Weather?"},
                  {"role": "assistant", "content": "", "tool_calls": [
                      {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                  {"role": "tool", "content": "{\"temp\": 3}"}, {"role": "assistant", "content": "3 degrees."}]},
    {"messages": [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "5",
                                                        "reasoning_content": "add"}]},
    {"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye!"}]},
]


def _batches(path, data_type):
    cfg = DataConfig(data_file=str(path), data_type=data_type, ctx_len=128, dataload="pad", micro_bsz=2,
                     epoch_steps=2, random_seed=3)
    ds = build_dataset(cfg)
    return [ds.collate([ds[i], ds[i + 1]]) for i in (0, 2)]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_save_to_disk_folder_parquet_and_arrow_give_the_jsonl_batches(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    want = _batches(jsonl, "jsonl")
    # Arrow unifies the message structs: absent fields come back as null (conversation.get reads both alike)
    ds = datasets.Dataset.from_list(RECORDS)
    ds.save_to_disk(str(tmp_path / "folder"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dict"))
    ds.to_parquet(str(tmp_path / "d.parquet"))
    _same(_batches(tmp_path / "folder", "hf"), want)
    _same(_batches(tmp_path / "dict", "hf"), want)
    _same(_batches(tmp_path / "d.parquet", "hf"), want)
    _same(_batches(tmp_path / "d.parquet", "sft"), want)   # pyarrow reader (auto for .parquet)


def test_auto_data_type_picks_hf_for_folders_and_hub_names(tmp_path):
    from types import SimpleNamespace
    from rwkvft.data.from_flags import resolve_data_type
    (tmp_path / "folder").mkdir()
    for path, want in ((tmp_path / "folder", "hf"), ("org/name", "hf"), (tmp_path / "x.csv", "hf"),
                       ("data/train.jsonl", "jsonl")):
        assert resolve_data_type(SimpleNamespace(data_type="auto", data_file=str(path))) == want


def _cli(tmp_path, *argv):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "rwkvft", *map(str, argv)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_uncached_hub_name_offline_is_one_error_line(tmp_path):
    r = _cli(tmp_path, "data", "someorg/no-such-dataset", "--data_split", "train", "--progress", "0")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rwkvft: error: cannot load Hugging Face dataset someorg/no-such-dataset")
    assert "datasets.load_dataset('someorg/no-such-dataset')" in lines[0]


def test_folder_with_no_usable_column_is_one_error_line(tmp_path):
    datasets.Dataset.from_list([{"foo": "a"}, {"foo": "b"}]).save_to_disk(str(tmp_path / "bad"))
    before = sorted(p.name for p in (tmp_path / "bad").iterdir())
    r = _cli(tmp_path, "data", tmp_path / "bad", "--progress", "0")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rwkvft: error: no valid record in ")
    assert "2 no 'text', 'messages', or prompt/response fields" in lines[0]
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == before
