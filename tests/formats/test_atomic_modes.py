"""atomic_path / atomic_dir: normal modes for every writer, nothing half-written, --force."""
from __future__ import annotations

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from export_helpers import HF_SIZE, snapshot, write_pair
from export_helpers import umask022  # noqa: F401 (an autouse fixture)
from rwkvft.cli import main
from rwkvft.utils import atomic_dir, atomic_path


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_path_gives_safetensors_the_umask_mode(tmp_path):
    with atomic_path(tmp_path / "a.st") as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))       # creates a new 0600 file
    assert mode(tmp_path / "a.st") == 0o644
    os.umask(0o077)
    with atomic_path(tmp_path / "b.st") as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))
    assert mode(tmp_path / "b.st") == 0o600                # the user's umask decides


def test_atomic_dir_crash_keeps_the_old_folder_and_leaves_nothing(tmp_path):
    out = tmp_path / "folder"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("new, half")
            raise RuntimeError("disk full")
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
    with atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
    assert mode(out) == 0o755 and mode(out / "b.txt") == 0o644


def test_export_force_replaces_and_never_touches_inputs(tmp_path, capsys):
    base, adapter, _, _ = write_pair(tmp_path, "miss", {"r": 8}, **HF_SIZE)
    out = tmp_path / "hf"
    argv = ["export", "--base", str(base), "--adapter", str(adapter), "--format", "hf", "--output", str(out)]
    assert main(argv) == 0
    (out / "stale.txt").write_text("x")
    assert main(argv) == 2 and "pass --force" in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0 and not (out / "stale.txt").exists()
    before = snapshot(tmp_path)
    for bad in (base, tmp_path):
        assert main(argv[:-1] + [str(bad), "--force"]) == 2
        assert "would overwrite" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
