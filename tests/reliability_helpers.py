"""Shared checks for the reliability tests (issue 17's bad-input and fault matrix).

Each case asserts: the exit status, exactly one `rwkvft: error:` line and no traceback, and
(with `snapshot`) that no file the user had changed or disappeared.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from rwkvft.cli import main

REPO = Path(__file__).resolve().parent.parent


def snapshot(*roots) -> dict[str, str]:
    """sha256 of every file under the given files/folders (path -> digest)."""
    out = {}
    for root in map(Path, roots):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_unchanged(before: dict[str, str]) -> None:
    after = {p: (hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).is_file() else None)
             for p in before}
    changed = [p for p in before if after[p] != before[p]]
    assert not changed, f"user files changed or removed: {changed}"


def check_one_error(rc: int, out: str, err: str, *needles: str) -> str:
    """rc 2, one `rwkvft: error:` line (progress bars and notes may surround it), no traceback;
    returns the message, which must contain every needle."""
    lines = (out + "\n" + err).splitlines()
    errors = [l for l in lines if "rwkvft: error:" in l]
    assert rc == 2, (rc, err[-3000:])
    assert len(errors) == 1 and errors[0].startswith("rwkvft: error: "), errors or err[-3000:]
    assert not any("Traceback" in l for l in lines), err[-3000:]
    msg = errors[0]
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def expect_error(capsys, argv, *needles: str) -> str:
    """Run `rwkvft argv` in this process and check it fails with one clear line."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return check_one_error(rc, cap.out, cap.err, *needles)


def run_subprocess(argv, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rwkvft", *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def train_flags(model, proj, data, **over) -> list[str]:
    """A very small LoRA run on token data (2 epochs of 2 steps, CPU, fp32); None drops a flag."""
    flags = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "numpy",
             "ctx_len": 16, "micro_bsz": 2, "epoch_steps": 2, "epoch_count": 2, "lr_init": 1e-2,
             "accelerator": "cpu", "precision": "fp32", "peft": "lora",
             "peft_config": '{"r":4,"lora_alpha":8}', "progress": 0}
    flags.update(over)
    return ["train"] + [x for k, v in flags.items() if v is not None for x in (f"--{k}", str(v))]


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def make_adapter(base, folder: Path, method: str, conf: dict, seed: int = 0) -> Path:
    """A saved adapter (rwkv-0.pth + adapter_config.json in `folder`) of `method` on `base`,
    with small random non-zero values."""
    import torch

    from rwkvft.adapters import adapter_state_dict, inject, parse_peft
    from rwkvft.checkpoint.adapter_io import fingerprint, save_adapter
    from rwkvft.checkpoint.rwkv_format import read_state_dict
    from rwkvft.models import load_model
    model = load_model(base)
    names = inject(model, parse_peft(method, conf), [])
    torch.manual_seed(seed)
    with torch.no_grad():
        for n in names:
            p = model.get_parameter(n)
            p.add_(0.01 * torch.randn_like(p))
    return save_adapter(folder / "rwkv-0.pth", adapter_state_dict(model, names), names.config,
                        fingerprint(read_state_dict(base)))
