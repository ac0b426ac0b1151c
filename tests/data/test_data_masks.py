"""Record kinds and loss masks: the trained tokens are exactly the response spans."""
from __future__ import annotations

import json

import pytest

from rwkvft.data import DataConfig, build_dataset
from rwkvft.data.formats import RecordError, Roles, record_segments
from rwkvft.data.tokenizer import WorldTokenizer
from rwkvft.errors import UserError

TOK = WorldTokenizer()


def jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def only_ds(path, **kw):
    cfg = DataConfig(data_file=path, data_type=kw.pop("data_type", "jsonl"), ctx_len=kw.pop("ctx_len", 256),
                     dataload="only", loss_mask=kw.pop("loss_mask", "qa"), epoch_steps=kw.pop("epoch_steps", 1), **kw)
    return build_dataset(cfg)


def full_doc(sample):
    """Rebuild the document (tokens) and the per-token mask of an unsplit `only` sample."""
    toks = [int(sample["input_ids"][0])] + sample["targets"].tolist()
    return toks, [None] + sample["mask"].tolist()


def test_chat_mask_covers_exactly_the_assistant_turns(tmp_path):
    rec = {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi there"},
                        {"role": "assistant", "content": "Hello, friend."}, {"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "4"}]}
    ds = only_ds(jsonl(tmp_path / "c.jsonl", [rec]))
    toks, mask = full_doc(ds[0])
    # hand-built: each segment tokenized on its own, then concatenated, then EOD
    segs = [("System: Be kind.\n\nUser: Hi there\n\nAssistant:", 0), (" Hello, friend.\n\n", 1),
            ("User: 2+2?\n\n", 0), ("Assistant:", 0), (" 4\n\n", 1)]
    want_t, want_m = [], []
    for text, m in segs:
        ids = TOK.encode(text)
        want_t += ids
        want_m += [m] * len(ids)
    assert toks == want_t + [0]
    assert mask[1:] == want_m[1:] + [1]  # mask of a token = whether it is trained as a target
    trained = [t for t, m in zip(toks[1:], mask[1:]) if m]
    assert TOK.decode(trained) == " Hello, friend.\n\n 4\n\n"


def test_prompt_response_and_instruction_masks(tmp_path):
    recs = [{"prompt": "Capital of France?", "response": "Paris."},
            {"instruction": "Translate", "input": "chat", "output": "cat"}]
    ds = only_ds(jsonl(tmp_path / "p.jsonl", recs), epoch_steps=2)
    got = {}
    for i in range(2):
        toks, mask = full_doc(ds[i])
        got[TOK.decode(toks)] = TOK.decode([t for t, m in zip(toks[1:], mask[1:]) if m])
    assert got == {"User: Capital of France?\n\nAssistant: Paris.\n\n": " Paris.\n\n",
                   "User: Translate\nchat\n\nAssistant: cat\n\n": " cat\n\n"}


def test_text_records_are_fully_trained_under_qa_and_none_trains_everything(tmp_path):
    recs = [{"text": "just text"}, {"prompt": "q", "response": "a"}]
    path = jsonl(tmp_path / "m.jsonl", recs)
    for loss_mask in ("qa", "none"):
        ds = only_ds(path, loss_mask=loss_mask, epoch_steps=2)
        by_text = {TOK.decode(full_doc(ds[i])[0]): ds[i]["mask"].tolist() for i in range(2)}
        assert by_text["just text"] == [1.0] * len(TOK.encode("just text"))
        qa_mask = by_text["User: q\n\nAssistant: a\n\n"]
        n_prompt = len(TOK.encode("User: q\n\nAssistant:"))
        n_resp = len(TOK.encode(" a\n\n"))
        if loss_mask == "qa":
            assert qa_mask == [0.0] * (n_prompt - 1) + [1.0] * (n_resp + 1)
        else:
            assert qa_mask == [1.0] * (n_prompt + n_resp)


def test_custom_role_names_and_sharegpt(tmp_path):
    rec = {"conversations": [{"from": "human", "value": "hey"}, {"from": "gpt", "value": "yo"}], "system": "S!"}
    segs, roles = record_segments(rec, Roles("Q", "A", "Sys", template="raw"))
    assert roles and segs == [("Sys: S!\n\n", False), ("Q: hey\n\n", False), ("A:", False), (" yo\n\n", True)]
    # g1 (default) merges the prompt turns into one segment: tokenized in one piece, as at inference
    segs, roles = record_segments(rec, Roles("Q", "A", "Sys"))
    assert roles and segs == [("Sys: S!\n\nQ: hey\n\nA:", False), (" yo\n\n", True)]
    ds = only_ds(jsonl(tmp_path / "r.jsonl", [rec]), user_role="Q", assistant_role="A", system_role="Sys")
    assert TOK.decode(full_doc(ds[0])[0]) == "Sys: S!\n\nQ: hey\n\nA: yo\n\n"


@pytest.mark.parametrize("record, reason", [
    ({"messages": []}, "messages is not a non-empty list"),
    ({"messages": [{"role": "user", "content": "x"}]}, "conversation has no assistant message"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role 'robot'"),
    ({"messages": [{"role": "user"}]}, "a message lacks 'role' or 'content'"),
    ({"prompt": 3, "response": "x"}, "prompt is not a string"),
    ({"text": ""}, "empty 'text'"),
    ([1, 2], "record is not a JSON object"),
    ({"foo": "bar"}, "no 'text', 'messages', or prompt/response fields"),
])
def test_bad_records_say_why(record, reason):
    with pytest.raises(RecordError, match=f"^{reason}"):
        record_segments(record)


def test_sft_json_and_parquet_train_only_the_response(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [{"query": "one?", "answer": "1"}, {"query": "two?", "answer": "2"}]
    (tmp_path / "s.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "s.parquet")
    for name in ("s.json", "s.parquet"):
        ds = only_ds(str(tmp_path / name), data_type="sft", sft_field=("query", "answer"),
                     loss_mask="none", epoch_steps=2)
        got = set()
        for i in range(2):
            toks, mask = full_doc(ds[i])
            got.add(TOK.decode([t for t, m in zip(toks[1:], mask[1:]) if m]))
        assert got == {" 1\n\n", " 2\n\n"}


def test_sft_errors(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps([{"q": "x", "a": "y"}]))
    with pytest.raises(UserError, match=r"no valid record in .*s.json; skipped 1 \(1 missing field 'query' or 'answer'"):
        only_ds(str(tmp_path / "s.json"), data_type="sft", sft_field=("query", "answer"))
    with pytest.raises(UserError, match="sft data_file not found: .*user/dataset .*local"):
        only_ds("user/dataset", data_type="sft")
    (tmp_path / "d.json").write_text('{"a": 1}')
    with pytest.raises(UserError, match="must hold a JSON list of records, found dict"):
        only_ds(str(tmp_path / "d.json"), data_type="sft")
    with pytest.raises(UserError, match="sft_field needs exactly two names"):
        only_ds(str(tmp_path / "s.json"), data_type="sft", sft_field=("q",))


def test_qa_without_roles_is_an_error(tmp_path):
    path = jsonl(tmp_path / "t.jsonl", [{"text": "no roles here"}])
    with pytest.raises(UserError, match=r"loss_mask qa needs records with roles .* --loss_mask none"):
        only_ds(path)
    from rwkvft.data.prepare import prepare
    prepare([path], str(tmp_path / "b"), progress=False)
    with pytest.raises(UserError, match=r"loss_mask qa needs records with roles .*\(binidx\) has none"):
        only_ds(str(tmp_path / "b"), data_type="binidx")
    with pytest.raises(UserError, match="loss_mask 'se' is not supported"):
        only_ds(path, loss_mask="se")


def test_masks_survive_splitting_in_pad_mode(tmp_path):
    prompt = " ".join(f"p{i}" for i in range(12))
    answer = " ".join(f"a{i}" for i in range(12))
    path = jsonl(tmp_path / "l.jsonl", [{"prompt": prompt, "response": answer}])
    head = TOK.encode(f"User: {prompt}\n\nAssistant:")
    toks = head + TOK.encode(f" {answer}\n\n") + [0]
    T = 8
    ds = build_dataset(DataConfig(data_file=path, data_type="jsonl", ctx_len=T, dataload="pad", loss_mask="qa",
                                  epoch_steps=1))
    n_pieces = -(-(len(toks) - 1) // T)  # pieces of T+1 tokens starting at 0, T, 2T, ...
    assert ds.samples_per_pass() == n_pieces
    assert f"1 documents longer than ctx_len+1 = 9 tokens were split ({n_pieces - 1} extra samples)" in ds.summary()
    seen = [0] * len(toks)
    for e in range(n_pieces):  # one sample per epoch: n_pieces epochs make one pass
        ds.set_epoch(e)
        s = ds[0]
        x = s["input_ids"].tolist()
        start = next(k for k in range(0, len(toks), T) if toks[k:k + len(x)] == x)
        n = min(T, len(toks) - 1 - start)
        assert s["targets"][:n].tolist() == toks[start + 1:start + 1 + n]
        assert s["mask"].tolist() == [float(p >= len(head)) for p in range(start + 1, start + 1 + n)]
        for p in range(start + 1, start + 1 + n):
            seen[p] += 1
    assert seen[1:] == [1] * (len(toks) - 1)  # every target exactly once in the pass
