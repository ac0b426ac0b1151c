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
