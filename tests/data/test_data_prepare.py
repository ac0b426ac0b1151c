"""rwkvft prepare: jsonl/text -> binidx, read back by a reader written here from the format description."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from rwkvft.cli import main as cli_main
from rwkvft.data.binidx import BinIdx
from rwkvft.data.prepare import prepare
from rwkvft.data.tokenizer import WorldTokenizer
from rwkvft.errors import UserError

TOK = WorldTokenizer()


def read_pair(prefix):
    """Independent binidx reader (spec §2.2): header, sizes, pointers, doc_idx; then the .bin."""
    raw = open(f"{prefix}.idx", "rb").read()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    version, code, n, doc_count = struct.unpack("<QBQQ", raw[9:34])
    assert (version, code) == (1, 8)  # uint16
    pos = 34
    sizes = struct.unpack(f"<{n}i", raw[pos:pos + 4 * n]); pos += 4 * n
    pointers = struct.unpack(f"<{n}q", raw[pos:pos + 8 * n]); pos += 8 * n
    doc_idx = struct.unpack(f"<{doc_count}q", raw[pos:pos + 8 * doc_count]); pos += 8 * doc_count
    assert pos == len(raw)
    assert list(doc_idx) == list(range(n + 1))
    data = open(f"{prefix}.bin", "rb").read()
    assert len(data) == 2 * sum(sizes)
    return [list(struct.unpack(f"<{s}H", data[p:p + 2 * s])) for s, p in zip(sizes, pointers)]


def write_lines(path, lines):
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return path


def test_jsonl_round_trip_gives_every_text_back_with_eod(tmp_path):
    texts = ["Hello world", "第二个文档 with ünïcödé", "line one\n\nline two", "a"]
    src = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": t}) for t in texts])
    s = prepare([src], str(tmp_path / "out"), progress=False)
    docs = read_pair(tmp_path / "out")
    assert [TOK.decode(d[:-1]) for d in docs] == texts
    assert all(d[-1] == 0 and 0 not in d[:-1] for d in docs)
    assert docs == [TOK.encode(t) + [0] for t in texts]
    assert (s.stats.docs, s.stats.tokens) == (4, sum(len(d) for d in docs))


def test_chat_and_pair_records_render_in_rwkv_chat_format(tmp_path):
    recs = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello!"}]},
            {"instruction": "Add", "input": "2 2", "output": "4"},
            {"prompt": "Q", "response": "A"}]
    src = write_lines(tmp_path / "c.jsonl", [json.dumps(r) for r in recs])
    prepare([src], str(tmp_path / "o"), progress=False)
    got = [TOK.decode(d) for d in read_pair(tmp_path / "o")]
    assert got == ["System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\n",
                   "User: Add\n2 2\n\nAssistant: 4\n\n", "User: Q\n\nAssistant: A\n\n"]


def test_custom_roles_no_eod_and_text_field(tmp_path):
    src = write_lines(tmp_path / "c.jsonl", [
        json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"body": "plain"})])
    from rwkvft.data.formats import Roles
    prepare([src], str(tmp_path / "o"), eod=False, text_field="body", roles=Roles("Q", "A", "S"), progress=False)
    assert [TOK.decode(d) for d in read_pair(tmp_path / "o")] == ["Q: x\n\nA: y\n\n", "plain"]


def test_plain_text_is_one_document_per_file_and_block_split_is_exact(tmp_path, monkeypatch):
    import rwkvft.data.pipeline as pl
    body = "".join(f"Line {i}:\n\n  indented\ttab\r\nnext {i}\n" for i in range(300))
    (tmp_path / "a.txt").write_text(body, encoding="utf-8", newline="")
    (tmp_path / "b.md").write_text("second file", encoding="utf-8")
    monkeypatch.setattr(pl, "CHUNK_BYTES", 97)  # force many blocks inside one document
    assert len(list(pl.text_tasks(tmp_path / "a.txt", pl.Options()))) > 50
    s = prepare([tmp_path / "a.txt", tmp_path / "b.md"], str(tmp_path / "o"), progress=False)
    docs = read_pair(tmp_path / "o")
    assert docs == [TOK.encode(body) + [0], TOK.encode("second file") + [0]]
    assert s.longest == len(docs[0])


def test_multiprocess_output_equals_single_process(tmp_path, monkeypatch):
    import rwkvft.data.pipeline as pl
    import rwkvft.data.prepare as pp
    monkeypatch.setattr(pl, "CHUNK_BYTES", 200)
    monkeypatch.setattr(pp, "CHUNK_BYTES", 10)  # not "small": use the pool
    src = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": f"document number {i} " * (i % 7 + 1)})
                                             for i in range(120)])
    prepare([src], str(tmp_path / "one"), workers=1, progress=False)
    prepare([src], str(tmp_path / "two"), workers=2, progress=False)
    assert read_pair(tmp_path / "one") == read_pair(tmp_path / "two")
    assert len(read_pair(tmp_path / "two")) == 120


def test_bad_lines_skipped_counted_and_reported(tmp_path, monkeypatch):
    import rwkvft.data.pipeline as pl
    monkeypatch.setattr(pl, "CHUNK_BYTES", 50)  # line numbers must survive chunking
    lines = [json.dumps({"text": f"ok {i}"}) for i in range(200)]
    lines[4] = "{not json"
    lines[9] = json.dumps({"other": 1})
    lines.insert(20, "")  # blank lines are ignored, not bad
    src = tmp_path / "d.jsonl"
    raw = [x.encode() for x in lines]
    raw[150] = b'{"text": "bad \xff byte"}'
    src.write_bytes(b"".join(x + b"\n" for x in raw))
    assert len(list(pl.jsonl_tasks(src, pl.Options()))) > 20
    s = prepare([src], str(tmp_path / "o"), progress=False, max_bad_fraction=0.02)
    assert (s.stats.docs, s.stats.bad, s.stats.first_bad) == (197, 3, [5, 10, 151])
    text = s.text()
    assert "skipped records: 3 (" in text and "first at line 5, 10" in text
    assert "1 invalid JSON" in text and "1 no 'text'" in text and "1 invalid UTF-8" in text
    assert [TOK.decode(d[:-1]) for d in read_pair(tmp_path / "o")][:6] == ["ok 0", "ok 1", "ok 2", "ok 3", "ok 5", "ok 6"]


def test_too_many_bad_lines_is_an_error_and_writes_nothing(tmp_path):
    src = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": "a"}), "oops", json.dumps({"text": "b"})])
    with pytest.raises(UserError, match=r"1 of 3 records .* are malformed .*first at line 2.*max_bad_fraction=0.01"):
        prepare([src], str(tmp_path / "o"), progress=False)
    assert not (tmp_path / "o.bin").exists() and not (tmp_path / "o.idx").exists()
    assert not list(tmp_path.glob(".o.*"))  # no temp files left behind


def test_no_valid_record_empty_file_missing_input(tmp_path):
    src = write_lines(tmp_path / "d.jsonl", ["[1, 2]", json.dumps({"txt": "x"})])
    with pytest.raises(UserError, match="no valid record in .*d.jsonl; skipped 2"):
        prepare([src], str(tmp_path / "o"), progress=False, max_bad_fraction=1.0)
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(UserError, match="input file is empty: .*e.jsonl"):
        prepare([tmp_path / "e.jsonl"], str(tmp_path / "o"), progress=False)
    with pytest.raises(UserError, match="input file not found: .*nope.jsonl"):
        prepare([tmp_path / "nope.jsonl"], str(tmp_path / "o"), progress=False)


def test_refuses_to_overwrite_without_force(tmp_path):
    src = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": "first"})])
    prepare([src], str(tmp_path / "o"), progress=False)
    write_lines(src, [json.dumps({"text": "second"})])
    with pytest.raises(UserError, match=r"o.bin already exists; pass --force"):
        prepare([src], str(tmp_path / "o"), progress=False)
    assert read_pair(tmp_path / "o") == [TOK.encode("first") + [0]]
    prepare([src], str(tmp_path / "o.bin"), progress=False, force=True)  # suffix is stripped
    assert read_pair(tmp_path / "o") == [TOK.encode("second") + [0]]


def test_never_overwrites_an_input(tmp_path):
    src = write_lines(tmp_path / "o.idx", [json.dumps({"text": "x"})])
    with pytest.raises(UserError, match="is one of the inputs"):
        prepare([src], str(tmp_path / "o"), progress=False, force=True, fmt="jsonl")


def test_cli_prepare_summary_and_error_exit(tmp_path, capsys):
    src = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": "hi there"})] * 3)
    assert cli_main(["prepare", "--input", str(src), "--output", str(tmp_path / "o"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"documents: 3   tokens: {3 * (len(TOK.encode('hi there')) + 1)}" in out
    assert "skipped records: none" in out and "--data_type binidx" in out
    assert cli_main(["prepare", "--input", str(src), "--output", str(tmp_path / "o"), "--quiet"]) == 2
    assert "rwkvft: error:" in capsys.readouterr().err
    assert cli_main(["prepare", "--input", str(src), "--output", str(tmp_path / "p"),
                     "--max_bad_fraction", "2"]) == 2
    assert "--max_bad_fraction must be between 0 and 1" in capsys.readouterr().err


def test_project_reader_matches_and_detects_mismatched_pair(tmp_path):
    src = write_lines(tmp_path / "d.jsonl", [json.dumps({"text": t}) for t in ["one", "two two"]])
    prepare([src], str(tmp_path / "o"), progress=False)
    b = BinIdx(tmp_path / "o")
    assert [b.doc(i).tolist() for i in range(len(b))] == read_pair(tmp_path / "o")
    with open(tmp_path / "o.bin", "ab") as f:
        f.write(b"\x01\x00")
    with pytest.raises(UserError, match=r"o.bin has \d+ bytes but .*o.idx describes \d+; .*do not belong together"):
        BinIdx(tmp_path / "o")
    (tmp_path / "o.idx").write_bytes((tmp_path / "o.idx").read_bytes()[:-3])
    with pytest.raises(UserError, match="truncated or corrupt"):
        BinIdx(tmp_path / "o")
    (tmp_path / "o.idx").write_bytes(b"NOTANIDX" + bytes(40))
    with pytest.raises(UserError, match="bad magic"):
        BinIdx(tmp_path / "o")
    with pytest.raises(UserError, match=r"binidx file not found: .*zz.idx \(pass the prefix"):
        BinIdx(tmp_path / "zz")


def test_reader_accepts_int32_binidx_from_json2binidx(tmp_path):
    # code 4 = int32, two sequences [5, 6, 0] and [7, 0]
    sizes, toks = [3, 2], [5, 6, 0, 7, 0]
    idx = b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 4, 2, 3) + struct.pack("<2i", *sizes)
    idx += struct.pack("<2q", 0, 12) + struct.pack("<3q", 0, 1, 2)
    (tmp_path / "j.idx").write_bytes(idx)
    (tmp_path / "j.bin").write_bytes(np.array(toks, "<i4").tobytes())
    b = BinIdx(str(tmp_path / "j"))
    assert [b.doc(0).tolist(), b.doc(1).tolist()] == [[5, 6, 0], [7, 0]]
