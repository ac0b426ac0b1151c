"""Issue 30, items 1, 2 and 9: what `rwkvft train` shows on the console with and without a
terminal (plain periodic lines, summaries, the run's ETA beside the epoch's), and library noise."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rwkvft.training.console import (PlainProgress, RunClock, console_callbacks, fmt_duration,
                                     progress_bar, run_steps, share_cpu_cores)

REPO = Path(__file__).resolve().parents[2]
PLAIN = re.compile(r"^step (\d+)/(\d+) \| epoch (\d+) (\d+)/(\d+) \| loss [\d.]+ \| \d+ tokens/s \| "
                   r"elapsed [\d:]+ \| ETA epoch [\d:?]+, run [\d:?]+$")


@pytest.fixture(scope="module")
def world_model(make_checkpoint):
    return make_checkpoint(n_layer=2, n_embd=128, vocab_size=65536, seed=3, dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def data_with_bad_line(tmp_path_factory):
    """120 good records and one line that is not JSON: the run skips it and must say so."""
    p = tmp_path_factory.mktemp("data") / "chat.jsonl"
    lines = [json.dumps({"text": f"User: question {i}?\n\nAssistant: answer {i}."}) for i in range(120)]
    p.write_text("\n".join(lines[:20] + ["{not json"] + lines[20:]) + "\n", encoding="utf-8")
    return p


def _argv(model, data, proj, **over):
    flags = {"load_model": model, "data_file": data, "proj_dir": proj, "ctx_len": 32,
             "micro_bsz": 2, "epoch_steps": 3, "epoch_count": 2, "peft": "miss",
             "peft_config": '{"r":8}', "accelerator": "cpu", "lr_init": 1e-3}
    flags.update(over)
    return [a for k, v in flags.items() for a in (f"--{k}", str(v))]


def test_without_a_terminal_plain_lines_and_summaries(world_model, data_with_bad_line, tmp_path):
    r = subprocess.run([sys.executable, "-m", "rwkvft", "train",
                        *_argv(world_model, data_with_bad_line, tmp_path / "run")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout.splitlines()
    plain = [m for line in out if (m := PLAIN.match(line))]
    # the first step and each epoch's last step at least; the run's total is 2 epochs x 3 steps
    assert len(plain) >= 3, r.stdout
    assert all(m.group(2) == "6" and m.group(5) == "3" for m in plain)
    assert [m.group(1) for m in plain][-1] == "6" and plain[0].group(1) == "1"
    assert any(l.startswith("data: ") and "120 documents" in l for l in out), r.stdout   # data summary
    assert any(l.startswith("skipped records: 1 (1 invalid JSON; first at line 21)") for l in out)
    assert sum(l.startswith("epoch 0: loss") or l.startswith("epoch 1: loss") for l in out) == 2
    assert any(l.startswith("saved ") for l in out)
    everything = r.stdout + r.stderr
    assert "\r" not in everything                      # no progress bar written into the log
    assert max(len(l) for l in everything.splitlines()) <= 1000
    assert "GPU available" not in r.stderr and "Warning" not in r.stderr   # library noise


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_on_a_terminal_the_bar_shows_the_run_eta(world_model, data_with_bad_line, tmp_path):
    master, slave = os.openpty()
    p = subprocess.Popen([sys.executable, "-m", "rwkvft", "train",
                          *_argv(world_model, data_with_bad_line, tmp_path / "run")],
                         cwd=REPO, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=600) == 0
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "run ETA" in text, text[-2000:]
    assert not PLAIN.search(text)           # the bar, not the plain lines
    assert "skipped records: 1" in text     # the same summaries as without a terminal


def test_clock_etas_of_epoch_and_run():
    now = [100.0]
    c = RunClock(total=40, per_epoch=10, clock=lambda: now[0])
    c.start(0)
    assert c.run_eta() is None and c.epoch_eta() is None   # nothing measured yet
    now[0] = 110.0
    c.advance(5)                      # 5 steps in 10 s
    assert c.epoch_eta() == pytest.approx(10.0) and c.run_eta() == pytest.approx(70.0)
    now[0] = 120.0
    c.advance(10)
    c.start_epoch(10)                 # epoch 1 begins; its own pace is unknown yet
    assert c.epoch_eta() is None and c.run_eta() == pytest.approx(60.0)
    now[0] = 123.0
    c.advance(11)
    assert c.epoch_eta() == pytest.approx(27.0) and c.run_eta() == pytest.approx(23 / 11 * 29)


def test_clock_after_a_resume_counts_from_the_resumed_step():
    now = [0.0]
    c = RunClock(total=20, per_epoch=10, clock=lambda: now[0])
    c.start(15)                       # resumed inside epoch 1
    now[0] = 4.0
    c.advance(17)
    assert c.epoch_end() == 20
    assert c.run_eta() == pytest.approx(6.0) and c.epoch_eta() == pytest.approx(6.0)


def _cfg(**kw):
    base = dict(epoch_count=5, my_exit=0, progress=True)
    base.update(kw)
    return SimpleNamespace(**base)


def test_run_steps_follow_epochs_budget_and_my_exit():
    assert run_steps(_cfg(), 10, None) == 50
    assert run_steps(_cfg(), 10, 23) == 23           # --max_steps / --max_tokens
    assert run_steps(_cfg(my_exit=2), 10, None) == 20


def test_fmt_duration():
    assert fmt_duration(None) == "?" and fmt_duration(float("inf")) == "?"
    assert fmt_duration(59.6) == "1:00" and fmt_duration(3723) == "1:02:03"
    assert fmt_duration(2 * 86400 + 3723) == "2d 01:02:03"


def test_console_callbacks_pick_bar_or_plain_lines():
    metrics = SimpleNamespace(last_row={}, runlog=None)
    bar, cbs = console_callbacks(_cfg(), metrics, 0, 10, None, terminal=True)
    assert bar and any(type(c).__name__ == "RunEtaBar" for c in cbs)
    bar, cbs = console_callbacks(_cfg(), metrics, 0, 10, None, terminal=False)
    assert not bar and any(isinstance(c, PlainProgress) for c in cbs)
    bar, cbs = console_callbacks(_cfg(progress=False), metrics, 0, 10, None, terminal=False)
    assert not bar and [type(c).__name__ for c in cbs] == ["ZeroGradWatch"]


def test_bar_metrics_carry_the_run_eta_and_readable_numbers(monkeypatch):
    now = [0.0]
    clock = RunClock(total=10, per_epoch=5, clock=lambda: now[0])
    clock.start(0)
    now[0] = 8.0
    clock.advance(2)
    bar = progress_bar(clock)
    monkeypatch.setattr(type(bar).__mro__[1], "get_metrics",
                        lambda self, t, m: {"lr": 2e-05, "loss": 1.23456, "v_num": 0})
    shown = bar.get_metrics(None, None)
    assert shown["lr"] == "2e-05" and shown["loss"] == "1.235" and "v_num" not in shown
    assert shown["run ETA"] == "0:32"


def test_more_devices_than_cores_warns_once_on_rank_zero(capsys):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = torch.get_num_threads()
    try:
        share_cpu_cores(cores + 2, rank0=True)
        err = capsys.readouterr().err
        assert err.count("rwkvft: warning:") == 1 and f"on {cores} CPU cores" in err
        share_cpu_cores(cores + 2, rank0=False)
        share_cpu_cores(1, rank0=True)
        assert capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(threads)
