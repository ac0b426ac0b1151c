"""--dataload modes and --data_type readers on tiny token streams with hand-computed samples."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from rwkvft.data import DataConfig, build_dataset
from rwkvft.data.tokenizer import WorldTokenizer
from rwkvft.errors import UserError

TOK = WorldTokenizer()


def npy(tmp_path, tokens, name="t.npy"):
    np.save(tmp_path / name, np.asarray(tokens, dtype=np.int64))
    return str(tmp_path / name)


def ds_for(path, data_type="numpy", **kw):
    kw.setdefault("epoch_steps", 1)
    return build_dataset(DataConfig(data_file=path, data_type=data_type, **kw))


def rows(ds, n=None):
    return [(ds[i]["input_ids"].tolist(), ds[i]["targets"].tolist(), ds[i]["mask"].tolist())
            for i in range(n or len(ds))]


# documents of the stream below: [5,6,0] [7,8,9,0] [3,0]
DOCS = [5, 6, 0, 7, 8, 9, 0, 3, 0]


def test_pad_one_document_per_sample_padded_and_masked(tmp_path):
    ds = ds_for(npy(tmp_path, DOCS), ctx_len=4, dataload="pad", micro_bsz=3)
    assert len(ds) == 3 and ds.samples_per_pass() == 3
    # samples keep their own length; the batch is padded (here to ctx_len 4, below 16)
    assert sorted(rows(ds)) == sorted([([5, 6], [6, 0], [1, 1]), ([7, 8, 9], [8, 9, 0], [1, 1, 1]),
                                       ([3], [0], [1])])
    batch = ds.collate([ds[i] for i in range(3)])
    got = sorted(zip(batch["input_ids"].tolist(), batch["targets"].tolist(), batch["mask"].tolist()))
    assert got == sorted([
        ([5, 6, 0, 0], [6, 0, 0, 0], [1, 1, 0, 0]),
        ([7, 8, 9, 0], [8, 9, 0, 0], [1, 1, 1, 0]),
        ([3, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]),
    ])
    assert int(batch["real_tokens"]) == 6
    assert batch["input_ids"].dtype == torch.long and batch["mask"].dtype == torch.float32


def test_pad_passes_cover_every_document_once_then_reshuffle(tmp_path):
    ds = ds_for(npy(tmp_path, DOCS), ctx_len=4, dataload="pad", micro_bsz=2)
    firsts = []
    for e in range(3):  # 3 epochs x 2 samples = 2 passes of 3 documents
        ds.set_epoch(e)
        firsts += [ds[i]["input_ids"][0].item() for i in range(2)]
    assert sorted(firsts[:3]) == [3, 5, 7] and sorted(firsts[3:]) == [3, 5, 7]


def test_long_documents_split_or_truncate(tmp_path):
    stream = list(range(1, 11)) + [0]  # one 11-token document
    split = ds_for(npy(tmp_path, stream), ctx_len=4, dataload="pad", micro_bsz=3, random_seed=1)
    # pieces of 5 tokens starting at 0, 4, 8 (sharing one token): [1..5] [5..9] [9,10,0]
    assert sorted(rows(split)) == sorted([([1, 2, 3, 4], [2, 3, 4, 5], [1, 1, 1, 1]),
                                          ([5, 6, 7, 8], [6, 7, 8, 9], [1, 1, 1, 1]),
                                          ([9, 10], [10, 0], [1, 1])])
    trunc = ds_for(npy(tmp_path, stream), ctx_len=4, dataload="pad", long_docs="truncate")
    assert rows(trunc) == [([1, 2, 3, 4], [2, 3, 4, 5], [1, 1, 1, 1])]
    assert "1 documents longer than ctx_len+1 = 5 tokens were truncated (6 tokens dropped)" in trunc.summary()


def test_only_mode_unpadded_and_needs_micro_bsz_1(tmp_path):
    ds = ds_for(npy(tmp_path, DOCS), ctx_len=16, dataload="only", epoch_steps=3)
    assert sorted(rows(ds)) == sorted([([5, 6], [6, 0], [1, 1]), ([7, 8, 9], [8, 9, 0], [1, 1, 1]),
                                       ([3], [0], [1])])
    with pytest.raises(UserError, match="dataload 'only' .* micro_bsz must be 1 \\(got 2\\)"):
        ds_for(npy(tmp_path, DOCS), ctx_len=16, dataload="only", micro_bsz=2)


def test_get_random_windows_are_contiguous_and_deterministic(tmp_path):
    stream = list(range(1, 101))
    ds = ds_for(npy(tmp_path, stream), ctx_len=8, dataload="get", epoch_steps=20, random_seed=3)
    starts = []
    for x, y, m in rows(ds):
        assert x == list(range(x[0], x[0] + 8)) and y == [v + 1 for v in x] and m == [1] * 8
        assert 1 <= x[0] and y[-1] <= 100
        starts.append(x[0])
    assert len(set(starts)) > 5  # random, not one fixed window
    again = ds_for(npy(tmp_path, stream), ctx_len=8, dataload="get", epoch_steps=20, random_seed=3)
    assert rows(again) == rows(ds)
    other = ds_for(npy(tmp_path, stream), ctx_len=8, dataload="get", epoch_steps=20, random_seed=4)
    assert rows(other) != rows(ds)
    ds.set_epoch(1)
    assert rows(ds) != rows(again)


def test_get_cover_visits_every_window_once_per_pass(tmp_path):
    stream = list(range(1, 34))  # 33 tokens, T=8: windows start at 0, 8, 16, 24 -> 4 per pass
    ds = ds_for(npy(tmp_path, stream), ctx_len=8, dataload="get", window_sampling="cover", epoch_steps=2)
    assert ds.samples_per_pass() == 4
    firsts = []
    for e in range(4):
        ds.set_epoch(e)
        firsts += [r[0][0] for r in rows(ds)]
    assert sorted(firsts[:4]) == [1, 9, 17, 25] and sorted(firsts[4:]) == [1, 9, 17, 25]


def test_pack_concatenates_documents_with_eod_and_walks_the_stream(tmp_path):
    # documents [1,2,0] [6,0] [3,4,5] (the last has no EOD: pack adds one); a pass is 3+2+4 = 9 tokens
    ds = ds_for(npy(tmp_path, [1, 2, 0, 6, 0, 3, 4, 5], name="p.npy"), ctx_len=3, dataload="pack",
                epoch_steps=6)
    docs = {1: [1, 2, 0], 6: [6, 0]}
    got = rows(ds)
    assert all(x[1:] == y[:-1] and m == [1, 1, 1] for x, y, m in got)
    windows = [[x[0]] + y for x, y, _ in got]
    for a, b in zip(windows, windows[1:]):
        assert a[-1] == b[0]  # consecutive windows share one token: nothing skipped
    flat = windows[0] + [v for w in windows[1:] for v in w[1:]]  # 19 tokens = 2 passes + 1
    for p in (flat[:9], flat[9:18]):
        parts, cur = [], []
        for v in p:
            cur.append(v)
            if v == 0:
                parts.append(cur)
                cur = []
        assert sorted(parts) == sorted([docs[1], [3, 4, 5, 0], docs[6]])


def test_ranks_get_disjoint_samples_and_each_epoch_differs(tmp_path):
    from torch.utils.data import DistributedSampler
    path = npy(tmp_path, list(range(1, 400)))
    cfg = DataConfig(data_file=path, data_type="numpy", ctx_len=8, dataload="get", window_sampling="cover",
                     epoch_steps=3, micro_bsz=2)
    seen = []
    for rank in range(2):
        ds = build_dataset(cfg, rank=rank, world_size=2)
        assert len(ds) == 3 * 2 * 2
        idx = list(DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=False))
        assert idx == list(range(rank, 12, 2))
        seen += [ds[i]["input_ids"][0].item() for i in idx]
    assert len(seen) == 12 and len(set(seen)) == 12


def test_pickled_dataset_gives_same_samples(tmp_path):
    from rwkvft.data.binidx import BinIdxWriter
    w = BinIdxWriter(tmp_path / "b")
    w.add(np.array([4, 5, 6, 0, 7, 8, 0]), np.array([4, 3]))
    w.close()
    ds = ds_for(str(tmp_path / "b"), "binidx", ctx_len=4, dataload="pad", micro_bsz=2)
    clone = pickle.loads(pickle.dumps(ds))  # what DataLoader workers receive
    assert rows(clone) == rows(ds)
    assert sorted(r[0] for r in rows(ds)) == [[4, 5, 6], [7, 8]]


def test_ctx_len_longer_than_every_document_is_a_cap(tmp_path):
    ds = ds_for(npy(tmp_path, DOCS), ctx_len=64, dataload="pad", micro_bsz=3)
    assert ("ctx_len 64 is a cap: the longest document has 4 tokens, the longest sample 3; batches are "
            "padded to their longest sample, rounded up to a multiple of 16: at most 16 positions") in ds.summary()
    batch = ds.collate([ds[i] for i in range(3)])
    assert batch["input_ids"].shape == (3, 16) and int(batch["real_tokens"]) == 6
    only = ds_for(npy(tmp_path, DOCS), ctx_len=64, dataload="only")
    assert "the longest sample has 3 tokens; samples are not padded" in only.summary()
    assert only.collate([only[0]])["input_ids"].shape[1] == len(only[0]["input_ids"])


def test_window_modes_need_enough_tokens(tmp_path):
    for mode in ("get", "pack"):
        with pytest.raises(UserError, match=r"the data has 9 tokens, fewer than ctx_len\+1 = 17; lower --ctx_len"):
            ds_for(npy(tmp_path, DOCS), ctx_len=16, dataload=mode)


# ---- readers -------------------------------------------------------------------------------


def test_utf8_and_utf16le_text_files(tmp_path):
    text = "Hello, 世界!\nSecond line.\n"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "b.txt").write_bytes(text.encode("utf-16-le"))
    want = TOK.encode(text) + [0]
    for name, dtype in (("a.txt", "utf-8"), ("b.txt", "utf-16le")):
        ds = ds_for(str(tmp_path / name), dtype, ctx_len=len(want) - 1, dataload="get")
        assert [ds[0]["input_ids"][0].item()] + ds[0]["targets"].tolist() == want
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe no")
    with pytest.raises(UserError, match=r"bad.txt is not valid utf-8 text \(bad byte at offset 3\)"):
        ds_for(str(tmp_path / "bad.txt"), "utf-8", ctx_len=2, dataload="get")


def test_uint16_raw_file_split_at_eod(tmp_path):
    np.array(DOCS, dtype="<u2").tofile(tmp_path / "t.u16")
    ds = ds_for(str(tmp_path / "t.u16"), "uint16", ctx_len=4, dataload="pad", micro_bsz=3)
    assert sorted(r[0] for r in rows(ds)) == [[3], [5, 6], [7, 8, 9]]
    (tmp_path / "odd.u16").write_bytes(b"\x01\x00\x02")
    with pytest.raises(UserError, match="odd number of bytes \\(3\\)"):
        ds_for(str(tmp_path / "odd.u16"), "uint16", ctx_len=1)


def test_numpy_2d_rows_and_bad_arrays(tmp_path):
    np.save(tmp_path / "r.npy", np.array([[1, 2, 3], [4, 5, 6]]))
    ds = ds_for(str(tmp_path / "r.npy"), ctx_len=2, dataload="pad", micro_bsz=2)
    assert sorted(rows(ds)) == [([1, 2], [2, 3], [1, 1]), ([4, 5], [5, 6], [1, 1])]
    np.save(tmp_path / "f.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(UserError, match="1-D float32 array; numpy data must be a 1-D or 2-D integer token array"):
        ds_for(str(tmp_path / "f.npy"), ctx_len=2)


def test_dummy_is_deterministic_and_respects_vocab(tmp_path):
    a = ds_for("", "dummy", ctx_len=16, dataload="pack", epoch_steps=4, vocab_size=50)
    b = ds_for("", "dummy", ctx_len=16, dataload="pack", epoch_steps=4, vocab_size=50)
    assert rows(a) == rows(b)
    assert max(max(x) for x, _, _ in rows(a)) < 50


def test_token_id_outside_vocab(tmp_path):
    with pytest.raises(UserError, match=r"token id 9 in .*t.npy is outside the vocabulary \(0..7\)"):
        ds_for(npy(tmp_path, DOCS), ctx_len=2, vocab_size=8)
    with pytest.raises(UserError, match=r"token id -1 in .* outside the vocabulary"):
        ds_for(npy(tmp_path, [1, -1, 0], name="n.npy"), ctx_len=1)


def test_config_and_file_errors(tmp_path):
    with pytest.raises(UserError, match="unknown data_type 'csv'; use one of binidx, jsonl"):
        ds_for("x", "csv")
    with pytest.raises(UserError, match="unknown dataload 'stream'; use one of get, pad, only, pack"):
        ds_for("x", "numpy", dataload="stream")
    with pytest.raises(UserError, match=r"data_file not found: .*missing.npy \(check the path\)"):
        ds_for(str(tmp_path / "missing.npy"))
    with pytest.raises(UserError, match="no data_file given for data_type jsonl"):
        ds_for("", "jsonl")
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(UserError, match=r"data_file is empty: .*e.jsonl"):
        ds_for(str(tmp_path / "e.jsonl"), "jsonl")
    with pytest.raises(UserError, match="ctx_len must be >= 1, got 0"):
        ds_for("x", ctx_len=0)
    with pytest.raises(UserError, match="binidx file not found"):
        ds_for(str(tmp_path / "nothing"), "binidx")


def test_jsonl_bad_fraction_in_training_reader(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a b c d"}\nbroken\n{"text": "e f g h"}\n')
    with pytest.raises(UserError, match=r"1 of 3 records .* malformed \(1 invalid JSON; first at line 2\)"):
        ds_for(str(tmp_path / "d.jsonl"), "jsonl", ctx_len=2)
    ds = ds_for(str(tmp_path / "d.jsonl"), "jsonl", ctx_len=2, max_bad_fraction=0.5)
    assert "skipped records: 1 (1 invalid JSON; first at line 2)" in ds.summary()


def test_bundled_sample_builds_in_every_mode():
    from rwkvft.data import SAMPLE_JSONL
    assert SAMPLE_JSONL.stat().st_size < 50_000
    for mode in ("get", "pad", "pack"):
        ds = build_dataset(DataConfig(data_file=str(SAMPLE_JSONL), data_type="jsonl", ctx_len=64,
                                      dataload=mode, loss_mask="qa", epoch_steps=2, micro_bsz=2))
        assert ds.corpus.n_docs == 33 and ds.corpus.stats.bad == 0
        assert all(ds[i]["mask"].sum() > 0 or mode == "get" for i in range(len(ds)))


@pytest.mark.parametrize("mode", ["get", "pad", "only", "pack"])
def test_every_mode_is_a_pure_function_of_seed_epoch_index(tmp_path, mode):
    stream = [v for d in range(40) for v in [d + 1] * (d % 5 + 1) + [0]]  # 40 documents
    path = npy(tmp_path, stream)

    def make(seed):
        return ds_for(path, ctx_len=6, dataload=mode, epoch_steps=10, random_seed=seed)

    a, b = make(7), make(7)
    b.set_epoch(1)
    b.set_epoch(0)  # going back to epoch 0 gives epoch 0's samples again
    assert [rows(a)[i] for i in (9, 0, 5)] == [rows(b)[i] for i in (9, 0, 5)]
    assert rows(make(8)) != rows(a)
    a.set_epoch(1)
    assert rows(a) != rows(b)
