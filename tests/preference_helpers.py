"""Shared pieces of the preference-tuning tests: the bundled pairs, a DPO `rwkvft train` argv
at the tests' tiny settings, and the rows of a run's loss.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

from rwkvft.data import preference as pref_data

SAMPLE = Path(pref_data.__file__).parent / "sample" / "preference.jsonl"
CTX = 48


def dpo_argv(model, proj, data=SAMPLE, **over) -> list[str]:
    """`train` argv for a short DPO MiSS run on CPU; keyword arguments override any flag."""
    flags = {"load_model": model, "proj_dir": proj, "data_file": data, "objective": "dpo",
             "peft": "miss", "peft_config": '{"r":16}', "ctx_len": CTX, "micro_bsz": 2,
             "epoch_steps": 3, "epoch_count": 1, "lr_init": 1e-3, "accelerator": "cpu",
             "precision": "fp32", "progress": 0}
    flags.update(over)
    return ["train", *[x for k, v in flags.items() for x in (f"--{k}", str(v))]]


def loss_rows(proj: Path) -> list[dict]:
    return [json.loads(l) for l in (proj / "loss.jsonl").read_text().splitlines()]
