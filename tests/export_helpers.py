"""Helpers shared by the export / import tests: tiny bases, trained adapters on disk, modes."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from rwkvft.adapters import adapter_state_dict, inject, parse_peft
from rwkvft.formats import fingerprint, save_adapter, write_state_dict
from rwkvft.models import build_model
from rwkvft.models.init import new_config, random_state_dict

# HF models: head size 64 (rwkv7-hf derives the ln_x eps from it; RWKV uses 64e-5 for every size)
HF_SIZE = {"n_embd": 128, "head_size": 64}
IDX = torch.tensor([[5, 17, 33, 2, 91, 64, 8, 40, 11, 3, 77, 19]])


def tiny_base(version="x070", seed=0, n_embd=64, head_size=16):
    cfg = new_config(n_layer=2, n_embd=n_embd, vocab_size=97, head_size=head_size, version=version)
    return cfg, random_state_dict(cfg, seed=seed)


def model_from(cfg, sd):
    model = build_model(cfg)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.eval()


def adapted(method, conf, parts=(), version="x070", seed=0, **size):
    """(cfg, base_sd, adapted model, adapter sd, config dict) with random non-zero adapter values;
    size: n_embd, head_size of the base (64 / 16 by default)."""
    cfg, base_sd = tiny_base(version, **size)
    model = model_from(cfg, base_sd)
    torch.manual_seed(seed)
    names = inject(model, parse_peft(method, conf), list(parts))
    with torch.no_grad():
        for n in names:
            p = model.get_parameter(n)
            p.add_(torch.randn_like(p) * (0.02 if p.dim() == 3 or n.endswith(("w1", "w2")) else 0.05))
    config = dict(names.config.to_dict(), base=fingerprint(base_sd))
    return cfg, base_sd, model, adapter_state_dict(model, names), config


def write_pair(tmp_path: Path, method, conf, parts=(), version="x070", **size):
    """Base .pth (fp32) and adapter rwkv-1.pth on disk -> (base path, adapter path, model, base_sd)."""
    cfg, base_sd, model, asd, config = adapted(method, conf, parts, version, **size)
    base = write_state_dict(base_sd, tmp_path / "base.pth", dtype=torch.float32)
    adapter = save_adapter(tmp_path / "run" / "rwkv-1.pth", asd, config, config["base"])
    return base, adapter, model, base_sd


def normal_modes(path: Path) -> None:
    """Every file we wrote reads 0644 (folders 0755) under umask 022."""
    paths = [path] + (sorted(path.rglob("*")) if path.is_dir() else [])
    for p in paths:
        mode = stat.S_IMODE(os.stat(p).st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), f"{p} has mode {oct(mode)}"


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def logits_of(model, idx=IDX):
    with torch.no_grad():
        out = model(idx)
    return (out[0] if isinstance(out, tuple) else out).float()
