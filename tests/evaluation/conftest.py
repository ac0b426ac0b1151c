"""Fixtures shared by the lm-eval tests: the local tasks and the demo's tiny base + adapter."""
from __future__ import annotations

import pytest

from eval_helpers import write_tasks


@pytest.fixture(scope="session")
def tasks_dir(tmp_path_factory):
    return write_tasks(tmp_path_factory.mktemp("lmeval_cli"))


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The demo's tiny World-vocabulary base and its trained MiSS adapter (short run)."""
    from rwkvft.cli import main
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--epoch_steps", "6", "--n_embd", "64"]) == 0
    return out / "demo-base.pth", sorted((out / "run").glob("rwkv-*.pth"))[-1]
