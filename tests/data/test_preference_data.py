"""Preference records -> (prompt, chosen, rejected) text and tokens: every record form, SFT's
rendering, separate tokenization, truncation (prompt keeps its end, answers their start)."""
from __future__ import annotations

import pytest

from rwkvft.data.formats import RecordError, Roles, record_segments, render
from rwkvft.data.preference import collate_pairs, fit_pair, read_pairs, render_record, Pair


def test_string_record_renders_like_sft_qa():
    p, c, r = render_record({"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."})
    sft = render(record_segments({"prompt": "Hi?", "response": "Hello."}, Roles())[0])
    assert p + c == sft and (p, c, r) == ("User: Hi?\n\nAssistant:", " Hello.\n\n", " Go away.\n\n")


def test_conversational_multi_turn_prompt_with_system():
    rec = {"system": "Be kind.",
           "prompt": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"},
                      {"role": "user", "content": "C"}],
           "chosen": [{"role": "assistant", "content": "D"}],
           "rejected": [{"role": "assistant", "content": "E"}]}
    p, c, r = render_record(rec, Roles("Q", "R", "S"))
    assert p == "S: Be kind.\n\nQ: A\n\nR: B\n\nQ: C\n\nR:" and c == " D\n\n" and r == " E\n\n"


def test_implicit_prompt_is_the_shared_leading_turns():
    u = {"role": "user", "content": "Q"}
    rec = {"chosen": [u, {"role": "assistant", "content": "yes"}],
           "rejected": [u, {"role": "assistant", "content": "no"}]}
    assert render_record(rec) == ("User: Q\n\nAssistant:", " yes\n\n", " no\n\n")


@pytest.mark.parametrize("rec,why", [
    ({"prompt": "q", "chosen": "a"}, "missing 'rejected'"),
    ({"chosen": "a", "rejected": "b"}, "missing 'prompt'"),
    ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "assistant message"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "neither a string"),
])
def test_malformed_records(rec, why):
    with pytest.raises(RecordError, match=why):
        render_record(rec)


def test_truncation_keeps_prompt_end_and_answer_starts():
    prompt, c, r = list(range(100, 130)), list(range(10)), list(range(20, 24))
    p2, c2, r2, cut = fit_pair(prompt, c, r, ctx_len=19)         # room 20: prompt keeps 10
    assert cut and p2 == prompt[-10:] and c2 == c[:10] and r2 == r
    assert fit_pair(prompt[:5], c, r, ctx_len=100) == (prompt[:5], c, r, False)
    p3, c3, _, _ = fit_pair(prompt, list(range(50)), r, ctx_len=19)  # long answer: prompt keeps half
    assert len(p3) == 10 and c3 == list(range(10))


def test_separate_tokenization_and_skips(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}\n'
                 '{"prompt": "x", "chosen": "' + "word " * 80 + 'A", "rejected": "' + "word " * 80 + 'B"}\n')
    from rwkvft.data.tokenizer import WorldTokenizer
    tok = WorldTokenizer()
    pairs, stats = read_pairs(str(f), ctx_len=32)
    assert len(pairs) == 1 and stats.skipped["identical after truncation to ctx_len"] == 1
    p = pairs[0]
    assert list(p.prompt) == tok.encode("User: What is 2+2?\n\nAssistant:")
    assert list(p.chosen) == tok.encode(" 4\n\n") + [0]


def test_collate_masks_exactly_the_answer_targets():
    b = collate_pairs([Pair((1, 2, 3), (4, 5, 0), (6, 0)), Pair((7,), (8, 0), (9, 9, 9, 0))])
    assert b["input_ids"].shape == (4, 5)
    for row, (seq, plen) in enumerate([((1, 2, 3, 4, 5, 0), 3), ((7, 8, 0), 1),
                                       ((1, 2, 3, 6, 0), 3), ((7, 9, 9, 9, 0), 1)]):
        m = b["mask"][row]
        targets = [int(b["targets"][row, j]) for j in range(5) if m[j] > 0]
        assert targets == list(seq[plen:])
    assert b["answer_len"].tolist() == [3, 2, 2, 4]


def test_pair_dataset_is_a_pure_function_of_seed_epoch_index():
    from rwkvft.data.preference import PairDataset, PairStats
    pairs = [Pair((i,), (1, 0), (2, 0)) for i in range(7)]
    a, b = PairDataset(pairs, PairStats(), 10, seed=3), PairDataset(pairs, PairStats(), 10, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    assert [a[i] for i in range(10)] == [b[i] for i in reversed(range(10))][::-1]
    a.set_epoch(0)
    first_pass = [a[i].prompt[0] for i in range(7)]
    assert sorted(first_pass) == list(range(7))   # every pair once per pass


# ---------- pairs are rendered by SFT's chat templates ----------
def _sft_ids(messages, roles, **extra):
    """The token ids SFT trains on for one conversation: segments tokenized one by one + EOD."""
    import numpy as np

    from rwkvft.data.pipeline import Chunk, encode_records
    chunk = Chunk(np.zeros(0, np.uint16), np.zeros(0, np.int64), np.zeros(0, np.uint8))
    encode_records([record_segments({"messages": messages, **extra}, roles)], True, chunk)
    return chunk.tokens.tolist()


_U = {"role": "user", "content": "Name  a colour.\r\n\n\nOne word!"}
_A = {"role": "assistant", "content": "Blue."}
PAIR_RECORDS = [
    ({"prompt": "Hi there?", "chosen": "Hello, friend.", "rejected": "Go away."}, {}),
    ({"system": "Be  kind.\n\n\nAlways.", "prompt": [_U, _A, {"role": "user", "content": "And another?"}],
      "chosen": [{"role": "assistant", "content": "Green,\n\nsurely."}],
      "rejected": [{"role": "assistant", "content": " red "}]}, {"system": "Be  kind.\n\n\nAlways."}),
    ({"chosen": [_U, {"role": "assistant", "content": "Teal."}], "rejected": [_U, _A]}, {}),
]
THINK_RECORD = {"prompt": "2+2?", "chosen": [{"role": "assistant", "content": "4", "reasoning_content": "add"}],
                "rejected": [{"role": "assistant", "content": "5"}]}


def _conversations(rec):
    from rwkvft.data.preference import _split_prompt
    p, c, r = _split_prompt(rec)
    return p + c, p + r


@pytest.mark.parametrize("template", ["g1", "world", "raw"])
@pytest.mark.parametrize("case", range(len(PAIR_RECORDS)))
def test_pair_tokens_equal_the_sft_rendering_per_template(tmp_path, template, case):
    """prompt + chosen + EOD (and prompt + rejected + EOD) are exactly the ids SFT trains on for
    that conversation, by every chat template; the prompt ends where SFT's loss starts."""
    import json
    rec, extra = PAIR_RECORDS[case]
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(rec) + "\n")
    roles = Roles(template=template)
    (pair,), _ = read_pairs(str(f), ctx_len=4096, roles=roles)
    full_c, full_r = _conversations(rec)
    assert list(pair.prompt + pair.chosen) == _sft_ids(full_c, roles, **extra)
    assert list(pair.prompt + pair.rejected) == _sft_ids(full_r, roles, **extra)
    from rwkvft.data.tokenizer import WorldTokenizer
    prompt_text = WorldTokenizer().decode(list(pair.prompt))
    assert prompt_text.endswith("Assistant:")
    if "colour" in prompt_text:   # g1 and world clean turns (no blank line inside one), raw does not
        assert ("Name  a colour.\nOne word!" in prompt_text) == (template != "raw")


def test_think_reply_against_a_plain_reply_shares_the_common_prompt(tmp_path):
    """g1 opens a think reply with "Assistant: <think" (prompt in SFT): the rejected reply has no
    think, so the shared prompt is the common token prefix and "<think" is scored as answer."""
    import json
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(THINK_RECORD) + "\n")
    roles = Roles(template="g1")
    (pair,), _ = read_pairs(str(f), ctx_len=4096, roles=roles)
    full_c, full_r = _conversations(THINK_RECORD)
    assert list(pair.prompt + pair.chosen) == _sft_ids(full_c, roles)
    assert list(pair.prompt + pair.rejected) == _sft_ids(full_r, roles)
    from rwkvft.data.tokenizer import WorldTokenizer
    tok = WorldTokenizer()
    assert tok.decode(list(pair.prompt)).endswith("Assistant:")
    assert tok.decode(list(pair.chosen[:-1])).startswith(" <think>\nadd\n</think>\n4")
    from rwkvft.errors import UserError
    with pytest.raises(UserError, match="cannot render think text"):   # world: a malformed record
        read_pairs(str(f), ctx_len=4096, roles=Roles(template="world"))
