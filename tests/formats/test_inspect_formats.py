"""`rwkvft inspect` on every format we write, and their file modes (0644 under umask 022)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from export_helpers import HF_SIZE, normal_modes, write_pair
from export_helpers import umask022  # noqa: F401 (an autouse fixture)
from rwkvft.cli import main


def inspect_json(capsys, path) -> dict:
    capsys.readouterr()
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def inspect_text(capsys, path) -> str:
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("version", ["x070", "x060"])
def test_merged_files_have_normal_modes_and_inspect(tmp_path, capsys, version):
    base, adapter, _, _ = write_pair(tmp_path, "miss", {"r": 8}, version=version)
    normal_modes(adapter)
    normal_modes(adapter.parent / "adapter_config.json")
    for fmt, name in (("pth", "m.pth"), ("safetensors", "m.safetensors"), ("st", "m.st")):
        out = tmp_path / name
        assert main(["merge", "--base", str(base), "--adapter", str(adapter), "--output", str(out),
                     "--format", fmt]) == 0
        normal_modes(out)
        text = inspect_text(capsys, out)
        kind = "Ai00 / web-rwkv model (st)" if fmt == "st" else f"RWKV model ({fmt})"
        assert f"kind         {kind}" in text
        assert f"version      {version}" in text and "layers       2" in text and "n_embd       64" in text
    info = inspect_json(capsys, tmp_path / "m.st")
    assert (info["kind"], info["version"], info["n_layer"], info["dtypes"]) == ("ai00 model", version, 2, ["float16"])


def test_adapters_and_exports_are_described(tmp_path, capsys):
    base, adapter, _, _ = write_pair(tmp_path, "miss", {"r": 8}, ["ln"], **HF_SIZE)
    info = inspect_json(capsys, adapter)
    assert (info["kind"], info["method"], info["mode"], info["r"], info["base_version"],
            info["base_n_embd"], info["adapted_matrices"], info["train_parts"]) == \
        ("adapter", "miss", "default", 8, "x070", 128, 12, ["ln"])
    assert "method       miss" in inspect_text(capsys, adapter)
    for fmt, out in (("ai00-lora", tmp_path / "l.st"), ("hf", tmp_path / "hf")):
        assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", fmt,
                     "--output", str(out)]) == 0
    info = inspect_json(capsys, tmp_path / "l.st")
    assert (info["kind"], info["ranks"], info["matrices"], info["n_layer"]) == ("ai00 lora", [8], 12, 2)
    info = inspect_json(capsys, tmp_path / "hf")
    assert (info["kind"], info["version"], info["n_embd"], info["head_size"]) == ("hf model", "x070", 128, 64)
    base2, adapter2, _, _ = write_pair(tmp_path / "b", "lora", {"r": 4, "lora_alpha": 8}, **HF_SIZE)
    assert main(["export", "--base", str(base2), "--adapter", str(adapter2), "--format", "hf-peft",
                 "--output", str(tmp_path / "peft")]) == 0
    info = inspect_json(capsys, tmp_path / "peft")
    assert (info["kind"], info["format"], info["method"], info["r"], info["alpha"], info["adapted_matrices"]) == \
        ("hf-peft adapter", "peft LORA", "lora", 4, 8.0, 12)


def test_rwkv_peft_adapter_and_state_files(tmp_path, capsys):
    torch.save({"blocks.0.att.key.disha": torch.zeros(8, 64)}, tmp_path / "rwkv-0.pth")
    info = inspect_json(capsys, tmp_path / "rwkv-0.pth")
    assert (info["kind"], info["method"], info["source"], info["adapted_matrices"]) == \
        ("adapter", "miss", "rwkv-peft", 1)
    state = {f"blocks.{i}.att.time_state": torch.randn(4, 16, 16) for i in range(3)}
    torch.save(state, tmp_path / "s.pth")
    save_file({k: v.half() for k, v in state.items()}, str(tmp_path / "s.state"))
    for name, fmt in (("s.pth", "pth"), ("s.state", "state")):
        info = inspect_json(capsys, tmp_path / name)
        assert (info["kind"], info["format"], info["n_layer"], info["n_head"], info["head_size"], info["n_embd"]) == \
            ("state", fmt, 3, 4, 16, 64)
    assert "Ai00" in inspect_text(capsys, tmp_path / "s.state")
