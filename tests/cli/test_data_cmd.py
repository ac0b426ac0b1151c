"""`rwkvft data`: lint by record number, totals equal to what training reads and logs."""
from __future__ import annotations

import json
import re

from rwkvft.cli import main
from rwkvft.data import SAMPLE_JSONL, build_dataset
from rwkvft.data.datasets import DataConfig

U = {"role": "user", "content": "hi"}


def _chat(reply, user="hi"):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


LINT_RECORDS = [
    _chat("fine"),                                                     # 1: clean
    _chat("<think>I wonder what to say. Hello."),                      # 2: unbalanced think
    _chat("ok", user="first paragraph\n\nsecond paragraph"),           # 3: blank line inside a turn
    _chat(""),                                                         # 4: empty reply
    _chat(" ".join(["word"] * 60)),                                    # 5: longer than ctx_len
    {"messages": [U, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]}]},  # 6
    {"messages": [{"role": "robot", "content": "x"}]},                 # 7: unknown role
]


def _run(capsys, *argv):
    rc = main(["data", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _write(tmp_path, records):
    path = tmp_path / "lint.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_each_lint_problem_is_reported_with_its_record_number(tmp_path, capsys):
    rc, out, _ = _run(capsys, _write(tmp_path, LINT_RECORDS), "--ctx_len", 32, "--json", "--max_bad_fraction", 0.5,
                      "--progress", 0)
    assert rc == 0
    lint = {}
    for item in json.loads(out)["lint"]:
        lint.setdefault(item["record"], []).append(item["message"])
    assert 1 not in lint
    assert any(m.startswith("unbalanced think tags: 1 '<think' and 0 '</think'") for m in lint[2])
    assert any("message 1 (user) holds a blank line" in m for m in lint[3])
    assert any(m == "message 2 is an empty reply" for m in lint[4])
    assert any(re.match(r"\d+ tokens, longer than ctx_len\+1 = 33: it will be split", m) for m in lint[5])
    assert lint[6] == ["skipped: tool call arguments is not JSON"]
    assert lint[7] == ["skipped: unknown role 'robot'"]
    totals = json.loads(out)["totals"]
    assert totals["skipped"] == 2 and totals["documents"] == 5
    assert totals["skipped_by_reason"] == {"tool call arguments is not JSON": 1, "unknown role 'robot'": 1}


def _logged(dcfg: DataConfig) -> tuple[int, int, int]:
    """(documents, tokens, trained tokens) as a training run logs and trains them."""
    ds = build_dataset(dcfg)
    m = re.search(r"(\d+) documents, (\d+) tokens", ds.summary())
    trained = int(ds.tmask.sum()) if ds.tmask is not None else len(ds.corpus.tokens)
    return int(m[1]), int(m[2]), trained


def test_totals_equal_what_training_logs(tmp_path, capsys):
    for path, kw in ((SAMPLE_JSONL, {}), (_write(tmp_path, LINT_RECORDS), {"max_bad_fraction": 0.5})):
        flags = [x for k, v in kw.items() for x in (f"--{k}", v)]
        rc, out, _ = _run(capsys, path, "--json", "--progress", 0, *flags)
        assert rc == 0
        t = json.loads(out)["totals"]
        dcfg = DataConfig(data_file=str(path), data_type="jsonl", **kw)
        assert (t["documents"], t["tokens"], t["trained_tokens"]) == _logged(dcfg)
        # and the shown records' counts add up the same way, record by record
        rc, out, _ = _run(capsys, path, "--json", "--progress", 0, "--show", 1000, *flags)
        shown = json.loads(out)["records"]
        assert sum(r["tokens"] for r in shown) == t["tokens"]
        assert sum(r["trained_tokens"] for r in shown) == t["trained_tokens"]


def test_text_output_marks_trained_spans(capsys):
    rc, out, _ = _run(capsys, SAMPLE_JSONL, "--show", 1, "--progress", 0, "--color", "never")
    assert rc == 0
    assert "User: What is the capital of Lumeria?\n\nAssistant:[[ The capital of Lumeria is Velmora" in out
    assert "\n\n<EOD>]]" in out
    assert "loss_mask auto -> qa" in out and "records: 33 read, 33 used, 0 skipped" in out


def test_bad_template_is_one_error_line(capsys):
    rc, out, err = _run(capsys, SAMPLE_JSONL, "--chat_template", "chatml")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("rwkvft: error: --chat_template 'chatml'")
