"""`rwkvft eval --tasks` (scores, --compare on the demo's adapter, --json, errors); the plain
`lm_eval --model rwkvft` is in test_lm_eval_console.py."""
from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("lm_eval")  # the eval extra; in [test], so CI has it (tests/test_gpu_collection.py)

from eval_helpers import MC_DOCS, demo, mc_hits, tasks_dir  # noqa: F401  (fixtures)
from rwkvft.cli import main


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
    # paired by document, by hand: per-document correctness of each model from direct log-likelihoods
    from rwkvft import load_model
    from rwkvft.data.tokenizer import WorldTokenizer
    tok = WorldTokenizer()
    hb, ha = mc_hits(load_model(base), tok), mc_hits(load_model(base, adapter=adapter), tok)
    assert (b["value"], a["value"]) == (pytest.approx(sum(hb) / 8), pytest.approx(sum(ha) / 8))
    d = [x - y for x, y in zip(ha, hb)]
    mean = sum(d) / len(d)
    hand = (sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) ** 0.5
    assert row["diff_stderr"] == pytest.approx(hand, abs=1e-12)
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


def test_bad_input_gets_one_error_line(demo, tasks_dir, tmp_path, capsys):
    base, _ = demo
    common = ["eval", "--model", str(base), "--include_path", str(tasks_dir)]
    _one_error(capsys, common + ["--tasks", "h28_mcq"], "unknown task 'h28_mcq'", "h28_mc")
    _one_error(capsys, common + ["--tasks", "h28_mc", "--limit", "0"], "--limit")
    _one_error(capsys, common + ["--tasks", "h28_mc", "--apply_chat_template"], "chat template")
    _one_error(capsys, common + ["--tasks", " , "], "--tasks")
    _one_error(capsys, common + ["--tasks", "h28_mc", "--num_fewshot", "-1"], "--num_fewshot")
    _one_error(capsys, ["eval", "--model", str(base), "--tasks", "h28_mc", "--include_path",
                        str(tmp_path / "no_such_folder")], "--include_path", "does not exist")
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
