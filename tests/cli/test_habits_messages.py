"""Issue 30, item 7: messages that used to mislead (JSON arrays, our own binidx files given to
`inspect`, an adapter given as the model, a jsonl file read as binidx, a run that failed before
training leaving an empty --proj_dir), and a reader that leaves a pipe early."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from export_helpers import write_pair
from rwkvft.cli import main
from rwkvft.data.readers import ReadOptions, read_corpus

REPO = Path(__file__).resolve().parents[2]
RECORDS = [{"text": f"User: question {i}?\n\nAssistant: answer {i}."} for i in range(12)]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rwkvft: error: "), err
    return err[0]


@pytest.mark.parametrize("name, indent", [("one_line.jsonl", None), ("pretty.jsonl", 2),
                                          ("list.json", None)])
def test_a_json_array_is_read_as_records_and_says_so(tmp_path, name, indent):
    p = tmp_path / name
    p.write_text(json.dumps(RECORDS, indent=indent), encoding="utf-8")
    corpus = read_corpus(ReadOptions(str(p), "jsonl"), 65536)
    assert corpus.n_docs == 12 and corpus.stats.bad == 0
    assert corpus.stats.notes == [f"{name} is one JSON array, not JSON Lines: its 12 elements "
                                  f"were read as records"]
    lines = "".join(json.dumps(r) + "\n" for r in RECORDS)
    (tmp_path / "lines.jsonl").write_text(lines, encoding="utf-8")
    same = read_corpus(ReadOptions(str(tmp_path / "lines.jsonl"), "jsonl"), 65536)
    assert (same.tokens == corpus.tokens).all() and same.stats.notes == []


@pytest.fixture(scope="module")
def binidx(tmp_path_factory):
    d = tmp_path_factory.mktemp("prep")
    (d / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    assert main(["prepare", "--input", str(d / "chat.jsonl"), "--output", str(d / "chat")]) == 0
    return d


@pytest.mark.parametrize("suffix", [".bin", ".idx"])
def test_inspect_recognises_our_binidx_data(capsys, binidx, suffix):
    msg = _error(capsys, ["inspect", str(binidx / f"chat{suffix}")])
    assert "binidx training data" in msg and f"--data_file {binidx / 'chat'} --data_type binidx" in msg
    assert "re-download" not in msg


def test_a_jsonl_file_given_as_a_model_is_called_data(capsys, binidx):
    msg = _error(capsys, ["inspect", str(binidx / "chat.jsonl")])
    assert "looks like JSON data, not a model" in msg


def test_data_type_binidx_on_a_jsonl_file_points_at_jsonl(capsys, tmp_path, binidx, small_model):
    msg = _error(capsys, ["train", "--load_model", str(small_model), "--data_file",
                          str(binidx / "chat.jsonl"), "--data_type", "binidx",
                          "--proj_dir", str(tmp_path / "run")])
    assert "looks like JSON Lines data: use --data_type jsonl (or auto)" in msg


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base, adapter, _, _ = write_pair(tmp_path_factory.mktemp("pair"), "miss", {"r": 8})
    return base, adapter


@pytest.mark.parametrize("argv", [
    ["generate", "--model", "{a}", "--prompt", "hi"],
    ["eval", "--model", "{a}", "--data_file", "{d}"],
    ["train", "--load_model", "{a}", "--data_file", "{d}", "--proj_dir", "{p}"],
    ["merge", "--base", "{a}", "--adapter", "{a}", "--output", "{p}.pth"],
])
def test_an_adapter_given_as_the_model_says_so(capsys, tmp_path, binidx, pair, argv):
    subs = {"a": str(pair[1]), "d": str(binidx / "chat.jsonl"), "p": str(tmp_path / "out")}
    msg = _error(capsys, [a.format(**subs) for a in argv])
    assert f"{pair[1]} is an adapter, not a model" in msg and f"--adapter {pair[1]}" in msg
    assert "rwkvft merge --base BASE" in msg and "unknown architecture" not in msg


@pytest.mark.parametrize("proj", ["new", "new/deeper/still"])
def test_a_run_that_fails_before_training_removes_the_folders_it_made(capsys, tmp_path, pair, proj):
    _error(capsys, ["train", "--load_model", str(pair[1]), "--data_file", "x.jsonl",
                    "--proj_dir", str(tmp_path / proj)])
    assert list(tmp_path.iterdir()) == []


def test_an_existing_proj_dir_stays(capsys, tmp_path, pair):
    (tmp_path / "mine").mkdir()
    _error(capsys, ["train", "--load_model", str(pair[1]), "--data_file", "x.jsonl",
                    "--proj_dir", str(tmp_path / "mine")])
    assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []


def test_a_reader_that_leaves_early_is_no_error(binidx):
    """`rwkvft data FILE | head -1`: no 'Broken pipe' error line, no traceback."""
    many = binidx / "many.jsonl"
    many.write_text("".join(json.dumps(r) + "\n" for r in RECORDS * 400), encoding="utf-8")
    p = subprocess.Popen([sys.executable, "-m", "rwkvft", "data", str(many), "--show", "4000"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=300)
    assert "error" not in err and "Traceback" not in err, err
