"""Records from the Hugging Face `datasets` library (the optional `datasets` extra): --data_type hf.

--data_file may be
- a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (a DatasetDict gives
  --data_split),
- a data file `datasets` reads (.parquet, .arrow, .csv, .json, .jsonl) -- loaded by its builder,
- a Hub name `org/name` (+ --data_config, --data_split), loaded with the library's own cache
  (~/.cache/huggingface/datasets): with no network and no cached copy that is one error line
  saying what to download where.
Rows become the same record dicts a jsonl line gives (formats.py reads both alike).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import UserError

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}
FILE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet", ".txt", ".md", ".npy", ".bin", ".idx", ".arrow", ".csv")
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hf(path: str) -> bool:
    """--data_type auto picks hf for a dataset folder, an .arrow/.csv file, or an org/name that is no file."""
    p = Path(path)
    if p.is_dir():
        return True
    if p.suffix.lower() in (".arrow", ".csv"):
        return True
    # a missing "data/train.jsonl" is a missing file, not a Hub name
    return not p.exists() and bool(HUB_NAME.match(path)) and p.suffix.lower() not in FILE_SUFFIXES


def _library():
    try:
        import datasets
    except ImportError:
        raise UserError("reading Hugging Face datasets needs the `datasets` library: "
                        "pip install 'rwkvft[datasets]'") from None
    datasets.disable_progress_bars()
    # the Hub client logs each retry of an unreachable host; the failure is reported as one line
    datasets.logging.set_verbosity_error()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    return datasets


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _pick_split(ds, split: str, what: str):
    if isinstance(ds, dict):  # a DatasetDict (a dict of splits)
        if split not in ds:
            raise UserError(f"{what} has no split {split!r}; use --data_split with one of {', '.join(ds)}")
        return ds[split]
    return ds


def _from_folder(lib, p: Path, split: str):
    try:
        ds = lib.load_from_disk(str(p))
    except FileNotFoundError as e:
        raise UserError(f"{p} is a folder but not one written by datasets' save_to_disk "
                        f"({_first_line(e)})") from None
    return _pick_split(ds, split, str(p))


def _from_file(lib, p: Path, split: str):
    builder = BUILDERS.get(p.suffix.lower())
    if builder is None:
        raise UserError(f"datasets cannot read {p.suffix} files; use one of {', '.join(BUILDERS)}")
    try:
        return lib.load_dataset(builder, data_files={split: str(p)}, split=split)
    except Exception as e:  # noqa: BLE001 - any failure here is the user's file
        raise UserError(f"cannot read {p} with datasets ({builder}): {_first_line(e)}") from None


def _from_hub(lib, name: str, split: str, config: str):
    try:
        return lib.load_dataset(name, config or None, split=split)
    except Exception as e:  # noqa: BLE001 - offline, unknown name, bad split: one line for all
        which = f"split {split!r}" + (f", config {config!r}" if config else "")
        call = f"{name!r}" + (f", {config!r}" if config else "")
        raise UserError(f"cannot load Hugging Face dataset {name} ({which}): {_first_line(e)}. With no "
                        f"network, download it on a connected machine with datasets.load_dataset({call}) "
                        f"into the Hugging Face cache (~/.cache/huggingface), or save_to_disk() it and "
                        f"pass that folder") from None


def load_records(source: str, split: str = "train", config: str = ""):
    """The rows of a dataset folder, data file or Hub name, as a list of dicts."""
    lib = _library()
    p = Path(source)
    if p.is_dir():
        ds = _from_folder(lib, p, split)
    elif p.is_file():
        ds = _from_file(lib, p, split)
    elif HUB_NAME.match(source):
        ds = _from_hub(lib, source, split, config)
    else:
        raise UserError(f"data_file not found: {source} (a file, a save_to_disk folder or a Hub org/name)")
    return ds.to_list()
