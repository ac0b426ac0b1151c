"""Batches that fit the data: dynamic padding (same loss and gradients as padding to ctx_len),
--group_by_length (every sample once per pass, deterministic, ranks disjoint, exact resume),
and the padded-batch workloads of `rwkvft bench --lengths`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from conftest import rel_err
from rwkvft.cli import main
from rwkvft.data import DataConfig, build_dataset
from rwkvft.data.collate import collate, padded_length
from rwkvft.data.datasets import make_sample
from rwkvft.errors import UserError


def test_padded_length_rounds_up_to_the_kernel_multiple_and_stops_at_ctx_len():
    from rwkvft.kernels import SEQ_MULTIPLE
    from rwkvft.kernels.cuda import CHUNK_LEN
    assert SEQ_MULTIPLE == CHUNK_LEN == 16
    assert [padded_length(n, 4096) for n in (1, 15, 16, 17, 58, 4090)] == [16, 16, 16, 32, 64, 4096]
    assert padded_length(17, 20) == 20 and padded_length(3, 4) == 4 and padded_length(20, 20) == 20


# ---------- dynamic padding changes nothing but the wasted positions ----------

@pytest.mark.parametrize("peft,config", [("miss", '{"r":16}'), ("lora", '{"r":4,"lora_alpha":8}')])
def test_dynamic_padding_gives_the_loss_and_gradients_of_padding_to_ctx_len(small_model, peft, config):
    from rwkvft.adapters import inject, parse_peft
    from rwkvft.formats import load_model
    from rwkvft.training.loss import masked_lm_loss

    model = load_model(small_model, dtype=torch.float32).train()
    trainable = inject(model, parse_peft(peft, config), [])
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # adapters start at zero (or with B = 0): make every path carry signal
        for n in trainable:
            params[n].copy_(0.05 * torch.randn(params[n].shape, generator=gen))
    rng = np.random.default_rng(1)
    samples = []
    for n in (5, 17, 30, 2):  # mixed lengths; one sample trains only its second half (a qa mask)
        tmask = np.ones(n + 1, dtype=np.uint8)
        tmask[: (n + 1) // 2 if n == 17 else 0] = 0
        samples.append(make_sample(rng.integers(1, 256, size=n + 1), tmask))

    def loss_and_grads(length):
        batch = collate(samples, length)
        model.zero_grad(set_to_none=True)
        h, _ = model.forward_features(batch["input_ids"])
        s, count = masked_lm_loss(model.head, h, batch["targets"], batch["mask"], chunk=16)
        loss = s / count
        loss.backward()
        return loss.detach(), {n: params[n].grad.clone() for n in trainable}

    ctx_len = 96
    dynamic = padded_length(30, ctx_len)
    assert dynamic == 32
    loss_d, grads_d = loss_and_grads(dynamic)
    loss_c, grads_c = loss_and_grads(ctx_len)
    assert abs(float(loss_d - loss_c)) <= 1e-6 * abs(float(loss_c))
    for n in trainable:
        assert grads_c[n].abs().max() > 0, n
        assert rel_err(grads_d[n], grads_c[n]) <= 1e-6, n


# ---------- --group_by_length ----------

def _docs_npy(tmp_path, lengths, name="docs.npy"):
    """EOD-separated documents; document d is `lengths[d]` copies of token d + 1, then EOD."""
    stream = [v for d, n in enumerate(lengths) for v in [d + 1] * n + [0]]
    np.save(tmp_path / name, np.asarray(stream, dtype=np.int64))
    return str(tmp_path / name)


LENGTHS = [3, 40, 7, 12, 25, 5, 9, 31, 18, 2, 14, 27, 6, 22, 11, 35, 4, 16, 29, 8, 20, 13, 38, 10, 24, 17]


def _grouped(path, world_size=1, rank=0, **kw):
    kw.setdefault("epoch_steps", 13)
    cfg = DataConfig(data_file=path, data_type="numpy", ctx_len=64, dataload="pad", micro_bsz=4,
                     group_by_length=True, **kw)
    return build_dataset(cfg, rank=rank, world_size=world_size)


def _doc(sample) -> int:
    return int(sample["input_ids"][0]) - 1


def test_group_by_length_visits_every_sample_once_per_pass_in_similar_length_batches(tmp_path):
    ds = _grouped(_docs_npy(tmp_path, LENGTHS), epoch_steps=13)  # one epoch = 52 samples = 2 passes
    assert len(ds) == 52 and ds.samples_per_pass() == 26
    docs = [_doc(ds[i]) for i in range(52)]
    assert sorted(docs[:26]) == list(range(26)) and sorted(docs[26:]) == list(range(26))
    # one pass is one sorted span here (26 < 4 x GROUP_SPAN): its six full micro-batches are
    # consecutive runs of the sorted lengths (document d has LENGTHS[d] + 1 tokens, so a sample
    # of LENGTHS[d]), and the two left over (the longest) come last
    by_len = sorted(LENGTHS)
    for p in (0, 1):
        batches = [tuple(sorted(LENGTHS[d] for d in docs[26 * p + 4 * b: 26 * p + 4 * b + 4])) for b in range(6)]
        assert sorted(batches) == [tuple(by_len[4 * b:4 * b + 4]) for b in range(6)]
        assert sorted(LENGTHS[d] for d in docs[26 * p + 24: 26 * p + 26]) == by_len[24:]
        assert batches != sorted(batches)  # batch order is shuffled: no length trend
    assert docs[:24] != docs[26:50]  # each pass has its own order
    # through the DataLoader: batches padded to their longest sample, little padding
    loader = DataLoader(ds, batch_size=4, collate_fn=ds.collate)
    real = positions = 0
    for k, batch in enumerate(loader):
        if k in (6, 12):  # the micro-batches spanning a pass boundary mix lengths
            continue
        lens = batch["mask"].sum(1)
        assert batch["input_ids"].shape[1] == padded_length(int(lens.max()), 64)
        real, positions = real + int(batch["real_tokens"]), positions + batch["input_ids"].numel()
    plain = build_dataset(DataConfig(data_file=ds.cfg.data_file, data_type="numpy", ctx_len=64,
                                     dataload="pad", micro_bsz=4, epoch_steps=13))
    plain_batches = list(DataLoader(plain, batch_size=4, collate_fn=plain.collate))
    plain_pad = 1 - sum(int(b["real_tokens"]) for b in plain_batches) / sum(b["input_ids"].numel() for b in plain_batches)
    assert 1 - real / positions < plain_pad


def test_group_by_length_is_a_pure_function_of_seed_epoch_index(tmp_path):
    path = _docs_npy(tmp_path, LENGTHS)
    a, b = _grouped(path, random_seed=3), _grouped(path, random_seed=3)
    b.set_epoch(2)
    b.set_epoch(1)
    a.set_epoch(1)
    order = [_doc(a[i]) for i in range(len(a))]
    assert [_doc(b[i]) for i in reversed(range(len(b)))] == order[::-1]  # any access order
    assert [_doc(_grouped(path, random_seed=4)[i]) for i in range(len(a))] != [_doc(b[i]) for i in range(len(a))]
    a.set_epoch(0)
    assert [_doc(a[i]) for i in range(len(a))] != order


def test_group_by_length_ranks_are_disjoint_and_each_micro_batch_is_one_group(tmp_path):
    lengths = LENGTHS[:24]  # 24 samples = 3 steps of 4 x 2 ranks: one pass per epoch
    path = _docs_npy(tmp_path, lengths)
    by_len = sorted(lengths)
    runs = {tuple(by_len[4 * b:4 * b + 4]) for b in range(6)}
    seen = []
    for rank in range(2):
        ds = _grouped(path, world_size=2, rank=rank, epoch_steps=3)
        assert len(ds) == 24
        idx = list(DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=False))
        for b in range(3):  # what this rank's DataLoader puts in micro-batch b
            docs = [_doc(ds[i]) for i in idx[4 * b:4 * b + 4]]
            assert tuple(sorted(lengths[d] for d in docs)) in runs
            seen += docs
    assert sorted(seen) == list(range(24))  # disjoint, and together one whole pass


def test_group_by_length_needs_pad_mode(tmp_path):
    path = _docs_npy(tmp_path, LENGTHS)
    for mode in ("get", "pack", "only"):
        with pytest.raises(UserError, match=f"group_by_length .* only dataload 'pad' makes \\(got '{mode}'\\)"):
            build_dataset(DataConfig(data_file=path, data_type="numpy", ctx_len=8, dataload=mode,
                                     group_by_length=True))


def _train_flags(model, proj, data, **over):
    flags = {"load_model": model, "proj_dir": proj, "data_file": data, "data_type": "numpy",
             "dataload": "pad", "group_by_length": 1, "ctx_len": 32, "micro_bsz": 2, "epoch_steps": 2,
             "epoch_count": 3, "lr_init": 1e-2, "lr_final": 1e-3, "warmup_steps": 2, "accelerator": "cpu",
             "precision": "fp32", "peft": "lora", "peft_config": '{"r":4,"lora_alpha":8}', "progress": 0}
    flags.update(over)
    return [x for k, v in flags.items() for x in (f"--{k}", str(v))]


def test_group_by_length_resume_after_my_exit_equals_the_uninterrupted_run(small_model, tmp_path):
    data = _docs_npy(tmp_path, [n % 31 + 1 for n in LENGTHS[:15]])  # 15 samples: passes straddle epochs
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *_train_flags(small_model, full, data)]) == 0
    assert main(["train", *_train_flags(small_model, part, data, my_exit=2)]) == 0
    assert not (part / "rwkv-2.pth").exists()
    assert main(["train", *_train_flags(small_model, part, data), "--resume"]) == 0
    a = torch.load(full / "rwkv-2.pth", weights_only=True)
    b = torch.load(part / "rwkv-2.pth", weights_only=True)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k
    rows_a = [json.loads(l) for l in (full / "loss.jsonl").read_text().splitlines()]
    rows_b = [json.loads(l) for l in (part / "loss.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows_b] == pytest.approx([r["loss"] for r in rows_a], rel=1e-5)
    assert [r["padding"] for r in rows_b] == [r["padding"] for r in rows_a]
    log = (full / "train_log.txt").read_text()
    assert "batches hold samples of similar length (--group_by_length)" in log
    assert "padding " in log.split("\nepoch 0:")[1].splitlines()[0]


# ---------- rwkvft bench --lengths ----------

def _bench(capsys, *argv):
    rc = main(["bench", "--size", "tiny", "--vocab_size", "512", "--ctx_len", "64", "--micro_bsz", "2",
               "--steps", "1", "--warmup", "1", "--accelerator", "cpu", "--json", *argv])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1
    return json.loads(out[0])


def test_bench_padded_workload_counts_real_tokens(capsys):
    from rwkvft.data.lengths import plan_batches, sample_lengths
    spec = "lognormal:median=12,max=60,sigma=0.9"
    lengths = sample_lengths(spec, 64, 2, 0)
    assert len(lengths) > 100 and 1 <= lengths.min() and lengths.max() <= 60
    for batching in ("ctx", "dynamic", "grouped"):
        r = _bench(capsys, "--lengths", spec, "--batching", batching)
        timed = plan_batches(lengths, 2, batching, 64, 0)[1:2]  # after one warm-up step
        real = sum(int(l.sum()) for l, _ in timed)
        positions = sum(2 * t for _, t in timed)
        assert r["padding_fraction"] == pytest.approx(1 - real / positions)
        assert r["tokens_per_s"] == pytest.approx(r["positions_per_s"] * real / positions)
        if batching == "ctx":
            assert positions == 2 * 64
    plain = _bench(capsys)
    assert plain["padding_fraction"] == 0 and plain["tokens_per_s"] == pytest.approx(plain["positions_per_s"])


def test_bench_lengths_from_a_data_file_match_the_training_samples():
    from rwkvft.data import SAMPLE_JSONL
    from rwkvft.data.lengths import sample_lengths
    got = sample_lengths(str(SAMPLE_JSONL), 32, 4, 0)
    ds = build_dataset(DataConfig(data_file=str(SAMPLE_JSONL), data_type="jsonl", ctx_len=32, dataload="pad",
                                  epoch_steps=len(got)))  # one epoch = one pass (micro_bsz 1)
    assert ds.samples_per_pass() == len(got)
    assert sorted(got.tolist()) == sorted(len(ds[i]["input_ids"]) for i in range(len(ds)))
    assert max(got) == 32  # the long sample documents were split at ctx_len


@pytest.mark.parametrize("argv,msg", [
    (["--lengths", "lognormal:mean=3"], "--lengths lognormal: bad part 'mean=3'"),
    (["--lengths", "lognormal:median=x"], "median='x' is not a number"),
    (["--lengths", "normal:median=3"], "the distribution is lognormal"),
    (["--batching", "sorted"], "--batching 'sorted' is not one of ctx, dynamic, grouped"),
])
def test_bench_bad_lengths_are_one_line(capsys, argv, msg):
    assert main(["bench", "--accelerator", "cpu", "--ctx_len", "64", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rwkvft: error:") and msg in err[0]
