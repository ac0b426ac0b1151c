"""Issue 29, "two runs in one proj_dir": a run holds its folder for its life (training/runlock.py).

A second `rwkvft train` into a folder whose run is still going (fresh, --overwrite or --resume)
exits 2 with one line naming the first run's PID and touches none of its files; after `kill -9`
of the first, the next run starts with no cleaning by hand.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_helpers import REPO, assert_unchanged, check_one_error, snapshot, train_flags
from rwkvft.cli import main
from rwkvft.errors import UserError
from rwkvft.training import runlock


def _start(argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rwkvft", *argv], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lock(p: subprocess.Popen, proj: Path) -> None:
    """Until the run has written the base of its log (so it holds the folder, and has files)."""
    t0 = time.time()
    lock = proj / runlock.LOCK_NAME
    while time.time() - t0 < 300:
        if lock.exists() and lock.read_text().strip() == str(p.pid) and \
                (proj / "train_config.json").exists():
            return
        assert p.poll() is None, p.communicate()[1][-2000:]
        time.sleep(0.05)
    raise AssertionError("the first run never took the folder")


def test_second_run_refused_then_kill_9_leaves_nothing_to_clean(small_model, tokens_npy, tmp_path):
    proj = tmp_path / "run"
    # a run that trains for minutes unless stopped (4000 steps of one epoch)
    p = _start(train_flags(small_model, proj, tokens_npy, epoch_steps=4000, epoch_count=1))
    try:
        _wait_for_lock(p, proj)
        for extra in ([], ["--overwrite"], ["--resume"]):
            _refused_while_running(p, proj, small_model, tokens_npy, extra)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=60)
    assert (proj / runlock.LOCK_NAME).exists()  # the stale file stays; its lock died with p
    assert main(train_flags(small_model, proj, tokens_npy) + ["--overwrite"]) == 0
    assert (proj / "rwkv-1.pth").exists()
    assert not (proj / runlock.LOCK_NAME).exists()  # a finished run leaves no lock file


def _refused_while_running(p, proj, small_model, tokens_npy, extra) -> None:
    before = snapshot(small_model, tokens_npy, proj / "train_config.json")
    t0 = time.monotonic()
    second = subprocess.run([sys.executable, "-m", "rwkvft",
                             *train_flags(small_model, proj, tokens_npy), *extra],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    check_one_error(second.returncode, second.stdout, second.stderr, f"PID {p.pid}",
                    "in use by another training run", str(proj))
    assert p.poll() is None, "the first run must keep going"
    assert_unchanged(before)
    # refused from the raw command line before torch is imported: about 0.3 s on this loaded
    # 2-core machine; the bound leaves room for a slower CI runner
    assert took < 5, (extra, took)


def test_the_lock_itself_refuses_when_the_command_line_does_not_name_the_folder(tmp_path):
    """`hold` is the check that counts (a --proj_dir from --config never reaches refuse_if_busy)."""
    proj = tmp_path / "p"
    proj.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from rwkvft.training import runlock; "
                               f"runlock.hold(Path({str(proj)!r})); print('held', flush=True); "
                               "time.sleep(120)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"PID {holder.pid}"):
            runlock.hold(proj)
        with pytest.raises(UserError, match=f"PID {holder.pid}"):
            runlock.refuse_if_busy(["train", f"--proj_dir={proj}"])
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    runlock.hold(proj)  # the holder died: free without cleaning
    runlock.release(proj)


def test_a_failed_run_releases_the_folder(capsys, small_model, tokens_npy, tmp_path):
    proj = tmp_path / "p"
    proj.mkdir()   # (a folder the failed run created itself is removed with the run: issue 30)
    bad = train_flags(small_model, proj, tokens_npy, peft_config='{"r": 4, "layers": [7]}')
    capsys.readouterr()
    assert main(bad) == 2
    assert not (proj / runlock.LOCK_NAME).exists()
    # another process can take it at once
    r = subprocess.run([sys.executable, "-c", "from rwkvft.training import runlock; import sys; "
                        f"runlock.hold(__import__('pathlib').Path({str(proj)!r})); print('ok')"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr[-2000:]


def test_lock_is_per_folder_and_reentrant_in_one_process(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    runlock.hold(a)
    try:
        runlock.hold(a)  # the same process again: no-op
        runlock.hold(b)  # another folder: its own lock
        probe = subprocess.run([sys.executable, "-c", "from pathlib import Path; from rwkvft.training "
                                f"import runlock; runlock.hold(Path({str(a)!r}))"],
                               cwd=REPO, capture_output=True, text=True, timeout=120)
        assert probe.returncode != 0 and f"PID {os.getpid()}" in probe.stderr
    finally:
        runlock.release(a)
        runlock.release(b)
    assert not (a / runlock.LOCK_NAME).exists() and not (b / runlock.LOCK_NAME).exists()
