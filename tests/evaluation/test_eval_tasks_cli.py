"""`rwkvft eval --tasks` (scores, --compare on the demo's adapter, --json, errors) and
`lm_eval --model rwkvft` through lm-eval's own command line."""
from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")  # the eval extra; in [test], so CI has it (tests/test_gpu_collection.py)

from eval_helpers import MC_DOCS, write_tasks
from rwkvft.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    return write_tasks(tmp_path_factory.mktemp("lmeval_cli"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's tiny World-vocabulary base and its trained MiSS adapter (short run)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--epoch_steps", "6", "--n_embd", "64"]) == 0
    return out / "demo-base.pth", sorted((out / "run").glob("rwkv-*.pth"))[-1]


def _one_error(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rwkvft: error: "), err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


def test_compare_prints_base_and_adapter_scores(demo, tasks_dir, capsys):
    base, adapter = demo
    assert main(["eval", "--model", str(base), "--adapter", str(adapter), "--tasks", "h28_mc",
                 "--include_path", str(tasks_dir), "--compare", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    b, a = out["results"]["base"]["h28_mc"]["acc"], out["results"]["adapted"]["h28_mc"]["acc"]
    row = out["compare"]["h28_mc"]["acc"]
    assert row["base"] == b["value"] and row["adapted"] == a["value"]
    assert row["diff"] == pytest.approx(a["value"] - b["value"])
    assert row["diff_stderr"] == pytest.approx((a["stderr"] ** 2 + b["stderr"] ** 2) ** 0.5)
    n = len(MC_DOCS)
    for side in ("base", "adapted"):   # 8 contexts run once each, 4 answers continue from each
        s = out["stats"][side]
        assert s["tokens_by_kind"]["context"] * 4 == s["plain_tokens"] - s["tokens_by_kind"]["continuation"] * 4 \
            or s["tokens"] < s["plain_tokens"]
        assert s["tokens"] < s["plain_tokens"]
    assert out["limit"] is None and n == 8
    # the text table: base, adapted, change and its standard error on one row
    assert main(["eval", "--model", str(base), "--adapter", str(adapter), "--tasks", "h28_mc",
                 "--include_path", str(tasks_dir), "--compare", "--limit", "4"]) == 0
    text = capsys.readouterr().out
    assert "base" in text and "adapted" in text and "change" in text
    assert any(line.startswith("h28_mc") and "acc" in line for line in text.splitlines())


def test_lm_eval_command_line_runs_the_rwkvft_model(demo, tasks_dir, tmp_path, monkeypatch, capsys):
    import lm_eval.__main__ as lm_main
    from lm_eval.api.registry import get_model

    from rwkvft.evaluation.harness import RwkvLM   # importing registers the model
    assert get_model("rwkvft") is RwkvLM
    base, adapter = demo
    monkeypatch.setattr(sys, "argv", [
        "lm_eval", "run", "--model", "rwkvft", "--model_args", f"pretrained={base},adapter={adapter}",
        "--tasks", "h28_mc", "--include_path", str(tasks_dir), "--device", "cpu",
        "--output_path", str(tmp_path / "out")])
    lm_main.cli_evaluate()
    written = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    capsys.readouterr()
    assert main(["eval", "--model", str(base), "--adapter", str(adapter), "--tasks", "h28_mc",
                 "--include_path", str(tasks_dir), "--json"]) == 0
    ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert written["results"]["h28_mc"]["acc,none"] == ours["results"]["adapted"]["h28_mc"]["acc"]["value"]


def test_pyproject_declares_the_lm_eval_plugin_and_the_extra():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    target = meta["entry-points"]["lm_eval.models"]["rwkvft"]
    module, name = target.split(":")
    import importlib
    from lm_eval.api.registry import get_model
    assert getattr(importlib.import_module(module), name) is get_model("rwkvft")
    extras = meta["optional-dependencies"]
    assert any(d.startswith("lm-eval") for d in extras["eval"]) and extras["lm_eval"] == extras["eval"]
    assert any(d.startswith("lm-eval") for d in extras["test"])


def test_bad_input_gets_one_error_line(demo, tasks_dir, tmp_path, capsys):
    base, _ = demo
    common = ["eval", "--model", str(base), "--include_path", str(tasks_dir)]
    _one_error(capsys, common + ["--tasks", "h28_mcq"], "unknown task 'h28_mcq'", "h28_mc")
    _one_error(capsys, common + ["--tasks", "h28_mc", "--limit", "0"], "--limit")
    _one_error(capsys, common + ["--tasks", "h28_mc", "--apply_chat_template"], "chat template")
    _one_error(capsys, common + ["--tasks", " , "], "--tasks")
    _one_error(capsys, ["eval", "--model", str(base)], "--data_file", "--tasks")
    # a task whose data is on the Hugging Face hub, with no network to fetch it
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "t.yaml").write_text("task: h28_hub\ndataset_path: rwkvft-no-such-org/no-such-dataset\n"
                                "test_split: test\noutput_type: multiple_choice\ndoc_to_text: q\n"
                                "doc_to_choice: ['a', 'b']\ndoc_to_target: 0\nmetric_list:\n  - metric: acc\n")
    _one_error(capsys, ["eval", "--model", str(base), "--include_path", str(hub), "--tasks", "h28_hub"],
               "h28_hub", "--include_path")


def test_missing_lm_eval_names_the_extra(demo, tasks_dir, monkeypatch, capsys):
    base, _ = demo
    monkeypatch.setitem(sys.modules, "lm_eval", None)   # as if not installed
    monkeypatch.setitem(sys.modules, "lm_eval.evaluator", None)
    _one_error(capsys, ["eval", "--model", str(base), "--tasks", "h28_mc", "--include_path", str(tasks_dir)],
               "rwkvft[eval]")
