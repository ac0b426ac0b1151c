"""Issue 29, the scan: every reader of JSON another program (or a damaged copy) wrote gets each
field set to each JSON type in turn, and either reads it or raises one UserError; no other
exception (TypeError, ValueError, KeyError, AttributeError, MemoryError) may come out.

Readers: an rwkvft adapter_config.json (hand-edited or damaged; read_adapter, then merged), a
Runner state file's rwkvft_state.json (read_state_file), a run's train_config.json
(eval's data settings and --resume's comparison), an HF peft adapter_config.json (read_hf_peft,
used by --adapter_init, merge, export, eval and inspect) and an HF model folder's config.json and
safetensors index (read_hf_folder).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from reliability_helpers import make_adapter
from rwkvft.cli import main
from rwkvft.config import eval_flags
from rwkvft.config import TrainConfig
from rwkvft.errors import UserError
from rwkvft.evaluation.data_eval import eval_settings
from rwkvft.foreign_json import ADAPTER, FINGERPRINT, HF_CONFIG, HF_PEFT, STATE_META
from rwkvft.formats import (infer_config, merge_adapter_file, read_hf_folder, read_hf_peft,
                            read_state_dict, read_state_file)
from rwkvft.training.resume_rules import MUST_MATCH
from rwkvft.training.safety import check_resume_config

# one value of every JSON type, and the edge values of each
WRONG = [None, True, False, 0, -1, 10 ** 30, 1.5, float("nan"), float("inf"), "", "x", "0-1", "²",
         [], [1], ["a", "b"], [None], {}, {"a": 1}]


# one value of each JSON type, for the slower readers (a merge per value)
ONE_OF_EACH = [None, True, -1, 1.5, float("nan"), "x", [1], ["a"], {"a": 1}]


def _reads_or_refuses(read, *args) -> None:
    try:
        read(*args)
    except UserError as e:
        assert "\n" not in str(e)


@pytest.fixture(scope="module")
def files(small_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    lora = make_adapter(small_model, root / "lora", "lora", {"r": 4, "lora_alpha": 8})
    miss = make_adapter(small_model, root / "miss", "miss", {"r": 4})
    state = make_adapter(small_model, root / "state", "state", {})
    out = {"root": root, "mcfg": infer_config(read_state_dict(small_model)), "lora": lora,
           "miss": miss, "state": state}
    for name, adapter, fmt in (("hf-peft-lora", lora, "hf-peft"), ("hf-peft-miss", miss, "hf-peft"),
                               ("hf", lora, "hf"), ("runner", state, "runner-state")):
        out[name] = root / (name + (".pth" if fmt == "runner-state" else ""))
        assert main(["export", "--base", str(small_model), "--adapter", str(adapter), "--format", fmt,
                     "--output", str(out[name])]) == 0
    return out


def _runner_with_meta(src: Path, dst: Path, meta) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            body = zin.read(item.filename)
            zout.writestr(item, json.dumps(meta).encode() if item.filename.endswith("rwkvft_state.json")
                          else body)
    return dst


def test_state_metadata(files, tmp_path):
    good = {"version": "x070", "n_layer": 2, "n_embd": 128, "head_size": 64}
    for meta in WRONG:  # the whole entry of each type
        _reads_or_refuses(read_state_file, _runner_with_meta(files["runner"], tmp_path / "s.pth", meta),
                          files["mcfg"])
    for name in STATE_META:
        for value in WRONG:
            path = _runner_with_meta(files["runner"], tmp_path / "s.pth", {**good, name: value})
            _reads_or_refuses(read_state_file, path, files["mcfg"])


def _config_variants(original: dict, names, values=WRONG):
    for value in values:
        yield value  # the whole file of another type
    for name in names:
        for value in values:
            yield {**original, name: value}


@pytest.mark.parametrize("which", ["hf-peft-lora", "hf-peft-miss"])
def test_hf_peft_adapter_config(files, tmp_path, which):
    folder = shutil.copytree(files[which], tmp_path / "peft")
    original = json.loads((folder / "adapter_config.json").read_text())
    for variant in _config_variants(original, sorted(set(original) | set(HF_PEFT))):
        (folder / "adapter_config.json").write_text(json.dumps(variant))
        _reads_or_refuses(read_hf_peft, folder)


def test_hf_model_config_and_index(files, tmp_path):
    folder = shutil.copytree(files["hf"], tmp_path / "hf")
    original = json.loads((folder / "config.json").read_text())
    for variant in _config_variants(original, sorted(set(original) | set(HF_CONFIG))):
        (folder / "config.json").write_text(json.dumps(variant))
        _reads_or_refuses(read_hf_folder, folder)
    (folder / "config.json").write_text(json.dumps(original))
    index = folder / "model.safetensors.index.json"
    good = {"metadata": {}, "weight_map": {"model.embeddings.weight": "model.safetensors"}}
    for variant in _config_variants(good, ["weight_map", "metadata"]):
        index.write_text(json.dumps(variant))
        _reads_or_refuses(read_hf_folder, folder)
    for wm in ({"a": None}, {"a": 3}, {"a": ["x"]}, {"a": "../model.safetensors"}, {"a": ""}):
        index.write_text(json.dumps({"weight_map": wm}))
        _reads_or_refuses(read_hf_folder, folder)


def test_train_config_for_eval(files, small_model, tokens_npy, tmp_path):
    path = tmp_path / "train_config.json"
    original = json.loads(TrainConfig().to_json())
    for variant in _config_variants(original, [f.name for f in eval_flags()]):
        path.write_text(json.dumps(variant))
        _reads_or_refuses(eval_settings, str(small_model), str(tokens_npy), None, str(path), {})


def test_train_config_for_resume(tmp_path):
    cfg = TrainConfig(load_model="m.pth", data_file="d.npy", peft="lora", peft_config='{"r": 4}')
    original = json.loads(cfg.to_json())
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    for variant in _config_variants(original, fields):
        (tmp_path / "train_config.json").write_text(json.dumps(variant))
        _reads_or_refuses(check_resume_config, cfg, tmp_path, tuple(MUST_MATCH))


@pytest.mark.parametrize("method", ["lora", "miss", "state"])
def test_rwkvft_adapter_config(files, small_model, tmp_path, method):
    folder = shutil.copytree(files[method].parent, tmp_path / "run")
    original = json.loads((folder / "adapter_config.json").read_text())
    base_sd = read_state_dict(small_model)
    variants = list(_config_variants(original, sorted(set(original) | set(ADAPTER)), ONE_OF_EACH))
    variants += [{**original, "base": {**original["base"], name: value}}
                 for name in FINGERPRINT for value in ONE_OF_EACH]
    for variant in variants:
        (folder / "adapter_config.json").write_text(json.dumps(variant))
        _reads_or_refuses(merge_adapter_file, base_sd, folder / "rwkv-0.pth")


def test_valid_adapter_configs_still_read(tmp_path):
    """The table must not refuse what rwkvft writes: every option of every method."""
    from rwkvft.adapters import parse_peft
    from rwkvft.foreign_json import adapter_config
    for method, conf in (("state", {"init": "base", "prompt_tokens": [3, 4]}), ("pissa", {"r": 4}),
                         ("miss", {"r": 4, "mode": "mini", "mini_r": 2, "layers": "0-1"}),
                         ("lora", {"r": 4, "lora_alpha": 8, "target_modules": ["att.key"]}),
                         ("none", {})):
        written = json.loads(json.dumps(parse_peft(method, conf).to_dict()))
        written["base"] = {"checksum": "ab", "version": "x070", "n_layer": 2, "n_embd": 128,
                           "vocab_size": 97}
        assert adapter_config(written, tmp_path / "adapter_config.json") == written
