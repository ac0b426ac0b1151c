"""benchmarks/bench_lm_eval.py runs (a tiny shape): it prints both paths with tokens, wall and
CPU time, and the shared path runs fewer tokens for the same accuracy."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_lm_eval.py"


def test_bench_lm_eval_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_lm_eval", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--n_layer", "2", "--n_embd", "64", "--limit", "4", "--shots", "1",
                       "--plain_limit", "2", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    rows = {m.group(1): m for m in re.finditer(
        r"^(shared context|plain)\s+(\d+) docs:\s+(\d+) tokens run .* s wall, .* s CPU.*acc ([\d.]+)$",
        text, re.M)}
    assert set(rows) == {"shared context", "plain"}, text
    per_doc = {k: int(m.group(3)) / int(m.group(2)) for k, m in rows.items()}
    assert per_doc["plain"] == pytest.approx(4 * per_doc["shared context"], rel=0.05)
    assert "-> ~" in rows["plain"].group(0)      # 2 of 4 documents, scaled to 4
