"""Chat templates: each record kind renders to the strings of ../shared/specs/chat_templates.md, and
the trained spans are exactly the replies (+ the closing blank line and EOD).

Expected strings are written by hand from the spec sections cited in each test."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rwkvft.data import SAMPLE_JSONL, DataConfig, build_dataset
from rwkvft.data.datasets import read_data
from rwkvft.data.formats import RecordError, Roles, record_segments, render
from rwkvft.data.templates import render_conversation
from rwkvft.data.tokenizer import WorldTokenizer

from chat_records import RECORDS, STOCK_TOOL, WEATHER_TOOL

TOK = WorldTokenizer()
G1 = Roles()
G1_NO_THINK = Roles(train_on_think=False)
WORLD = Roles(template="world")
RAW = Roles(template="raw")

def segs(name, roles=G1):
    return record_segments(RECORDS[name], roles)[0]


def test_openai_g1_cleans_turns_and_trains_replies():
    # §1 basic layout + clean_txt on user/system; §2 "use \n for newlines" inside replies
    assert segs("openai") == [
        ("System: Be brief.\n\nUser: Hi\nthere\n\nAssistant:", False), (" Hello.\nHow can I help?\n\n", True),
        ("User: 2+2?\n\nAssistant:", False), (" 4\n\n", True)]


def test_raw_keeps_content_exactly_and_each_turn_separate():
    assert segs("openai", RAW) == [
        ("System: Be brief.\n\n", False), ("User: Hi\r\n\r\n\r\nthere  \n\n", False), ("Assistant:", False),
        (" Hello.\n\nHow can I help?\n\n", True), ("User: 2+2?\n\n", False), ("Assistant:", False), (" 4\n\n", True)]


def test_think_trained_from_where_the_think_prompt_stops():
    # §1 think prompt "Assistant: <think"; §5 the loss starts where the generation prompt ends
    assert segs("openai_think") == [("User: 2+3?\n\nAssistant: <think", False), (">\n2 plus 3\nis 5\n</think>\n5\n\n", True)]
    assert segs("openai_inline_think") == [("User: 2+3?\n\nAssistant: <think", False), (">\nadd them\n</think>\n5\n\n", True)]
    # §1 fake think "<think>\n</think"
    assert segs("openai_fake_think") == [("User: 2+3?\n\nAssistant: <think", False), (">\n</think>\n5\n\n", True)]


def test_train_on_think_0_puts_the_think_in_the_prompt():
    # §5: with the think given, training starts after "</think", as with the fake-think prompt
    assert segs("openai_think", G1_NO_THINK) == [("User: 2+3?\n\nAssistant: <think>\n2 plus 3\nis 5\n</think", False),
                                                 (">\n5\n\n", True)]
    assert segs("openai_fake_think", G1_NO_THINK) == [("User: 2+3?\n\nAssistant: <think>\n</think", False), (">\n5\n\n", True)]


def test_openai_tools_render_as_g1_function_calls():
    # §1 function call: "System: Tools:\n- sig...\nReturn only a JSON function call.", a ```json reply,
    # the tool result as an untrained "User: Function output:\n..." turn; §4 compact JSON, one call a block
    assert segs("openai_tools") == [
        ("System: Tools:\n- get_weather(location: string, unit?: \"celsius\" | \"fahrenheit\")\n"
         "- get_stock_price(ticker: string)\nReturn only a JSON function call.\n\n"
         "User: Weather in Paris?\n\nAssistant:", False),
        (" ```json\n{\"name\":\"get_weather\",\"arguments\":{\"location\":\"Paris\"}}\n```\n\n", True),
        ("User: Function output:\n{\"temp\": 21}\n\nAssistant:", False),
        (" It is 21 degrees.\n\n", True)]


def test_sharegpt_function_call_observation_and_gpt_ignore():
    # §4 ShareGPT + LF observation/function + RT gpt_ignore (rendered, never trained); system joins the tools turn
    assert segs("sharegpt") == [
        ("System: S!\nTools:\n- get_stock_price(ticker: string)\nReturn only a JSON function call.\n\n"
         "User: AAPL?\n\nAssistant:", False),
        (" ```json\n{\"name\":\"get_stock_price\",\"arguments\":{\"ticker\":\"AAPL\"}}\n```\n\n", True),
        ("User: Function output:\n{\"price\": 190}\n\nAssistant:", False), (" 190 dollars.\n\n", True),
        ("User: Thanks\n\nAssistant: You are welcome.\n\n", False)]


def test_alpaca_system_history_and_input():
    # §4 Alpaca (LF): instruction\ninput, system first, history answers trained too
    assert segs("alpaca") == [("System: You translate.\n\nUser: Translate dog\n\nAssistant:", False), (" chien\n\n", True),
                              ("User: Translate\nchat\n\nAssistant:", False), (" cat\n\n", True)]


def test_trl_prompt_completion():
    assert segs("trl_prompt_completion") == [("User: Capital of France?\n\nAssistant:", False), (" Paris.\n\n", True)]


def test_world_is_g1_without_think_or_tools():
    assert segs("openai", WORLD) == segs("openai")
    for name in ("openai_think", "openai_tools"):
        with pytest.raises(RecordError, match="template 'world' cannot render"):
            record_segments(RECORDS[name], WORLD)


@pytest.mark.parametrize("record, reason", [
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": "{not json"}}]}]}, "tool call arguments is not JSON"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role 'robot'"),
    ({"tools": "[oops", "messages": [{"role": "user", "content": "x"}]}, "tools is not JSON"),
    ({"instruction": "q", "output": "a", "history": [["only one"]]}, "history is not a list of"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "gpt_ignore", "content": "y"}]},
     "conversation has no assistant message"),
])
def test_records_that_cannot_render_say_why(record, reason):
    with pytest.raises(RecordError, match=f"^{reason}"):
        record_segments(record)


def test_raw_refuses_what_it_cannot_write():
    for name in ("openai_think", "openai_tools", "sharegpt"):
        with pytest.raises(RecordError, match="template 'raw' cannot render"):
            record_segments(RECORDS[name], RAW)


def test_render_conversation_takes_message_dicts():
    msgs = RECORDS["openai_tools"]["messages"]
    assert render_conversation(msgs, "g1", tools=[WEATHER_TOOL, STOCK_TOOL]) == segs("openai_tools")


def _write(tmp_path, records, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_token_ids_are_prompt_and_answer_tokenized_apart(tmp_path):
    # acceptance: trained-span ids = encode(prompt) + encode(answer) (+ EOD), per segment, for every kind
    names = list(RECORDS)
    corpus = read_data(DataConfig(data_file=_write(tmp_path, [RECORDS[n] for n in names]), data_type="jsonl"))
    assert corpus.n_docs == len(names) and corpus.stats.bad == 0
    for d, name in enumerate(names):
        ids, mask = [], []
        for text, trained in segs(name):
            ids += TOK.encode(text)
            mask += [int(trained)] * len(TOK.encode(text))
        s, e = corpus.offsets[d], corpus.offsets[d + 1]
        assert corpus.tokens[s:e].tolist() == ids + [0], name
        assert corpus.mask[s:e].tolist() == mask + [1], name


def test_raw_reproduces_the_earlier_token_ids_and_masks_on_the_sample_data():
    # ids/masks written by main@fd54d68 before templates existed (tests/data/fixtures), plus a hand check
    fixture = json.loads((__import__("pathlib").Path(__file__).parent / "fixtures" / "sample_ids_fd54d68.json").read_text())
    corpus = read_data(DataConfig(data_file=str(SAMPLE_JSONL), data_type="jsonl", loss_mask="qa", chat_template="raw"))
    got = [{"ids": corpus.tokens[s:e].tolist(), "mask": corpus.mask[s:e].tolist()}
           for s, e in zip(corpus.offsets[:-1], corpus.offsets[1:])]
    assert got == fixture["docs"]
    first = json.loads(SAMPLE_JSONL.read_text().splitlines()[0])
    prompt = TOK.encode(f"User: {first['instruction']}\n\n") + TOK.encode("Assistant:")
    answer = TOK.encode(f" {first['output']}\n\n")
    assert got[0] == {"ids": prompt + answer + [0], "mask": [0] * len(prompt) + [1] * (len(answer) + 1)}


def _batch_masks(path, **kw):
    cfg = DataConfig(data_file=path, data_type="jsonl", ctx_len=256, dataload="pad", micro_bsz=2,
                     epoch_steps=2, **kw)
    ds = build_dataset(cfg)
    return ds, [ds.collate([ds[i], ds[i + 1]]) for i in (0, 2)]


def test_loss_mask_auto_trains_no_prompt_token_on_chat(tmp_path):
    recs = [RECORDS["openai"], RECORDS["alpaca"], RECORDS["openai_tools"], RECORDS["trl_prompt_completion"]]
    ds, batches = _batch_masks(_write(tmp_path, recs))
    assert "loss_mask auto -> qa: trains responses only" in ds.summary()
    trained_text = set()
    for b in batches:
        for row in range(2):
            m = b["mask"][row].bool()
            trained_text.add(TOK.decode([int(t) for t in b["targets"][row][m]]))
    # the trained targets of each document are exactly its reply segments + EOD
    want = {"".join(t for t, tr in record_segments(r)[0] if tr) for r in recs}
    assert {t.replace("\x00", "") for t in trained_text} == want
    # and no prompt text is among them
    assert not any("User:" in t or "System:" in t for t in trained_text)


def test_loss_mask_auto_trains_every_real_token_of_text(tmp_path):
    ds, batches = _batch_masks(_write(tmp_path, [{"text": f"plain text number {i}"} for i in range(4)]))
    assert "loss_mask auto -> none: trains every real token" in ds.summary()
    for b in batches:  # every non-padding position is trained
        assert int(b["mask"].sum()) == int(b["real_tokens"]) > 0


def test_sample_prompt_of_a_think_record_ends_where_generation_starts():
    s = segs("openai_think")
    last = max(i for i, (_, tr) in enumerate(s) if tr)
    assert render(s[:last]).endswith("Assistant: <think")
    assert np.array_equal(TOK.encode(render(s[:last])), TOK.encode("User: 2+3?\n\nAssistant: <think"))
