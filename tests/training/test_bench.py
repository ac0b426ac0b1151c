"""`rwkvft bench` on CPU: the JSON it prints and the FLOP count against a hand count."""
from __future__ import annotations

import json
import math

import pytest

from rwkvft.cli import main


def _hand_count_tiny(vocab: int, r: int):
    """RWKV-7 L2 C128 (models.init.new_config: FFN 4C, every low-rank dim 32), MiSS default
    rank r on att.receptance/key/value/output and ffn.key/value. Numbers worked out by hand."""
    C, F, D = 128, 512, 32
    linears = 4 * C * C + C * F + F * C             # 196608 per layer
    low_rank = 2 * C * D                            # one (C, D) + (D, C) pair: 8192
    layer0 = linears + 3 * low_rank                 # w, a, g (layer 0 never uses v1/v2)
    layer1 = linears + 4 * low_rank                 # w, a, v, g
    adapters = 2 * r * (4 * C + F + C)              # D (r, out) per target, both layers
    blocks = layer0 + layer1 + adapters
    total = blocks + vocab * C                      # + head; the embedding is a gather
    return total, adapters, blocks


def test_bench_tiny_json_and_flop_count(capsys):
    rc = main(["bench", "--size", "tiny", "--vocab_size", "512", "--ctx_len", "32",
               "--micro_bsz", "2", "--steps", "2", "--warmup", "1", "--grad_cp", "1",
               "--accelerator", "cpu", "--json"])
    assert rc == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    r = json.loads(out[0])
    total, adapters, blocks = _hand_count_tiny(512, 64)
    assert (r["n_layer"], r["n_embd"], r["vocab_size"]) == (2, 128, 512)
    assert r["matmul_params"] == total == 663552
    assert r["trainable_matmul_params"] == adapters == r["trainable_params"] == 147456
    assert r["block_matmul_params"] == blocks
    assert r["flops_per_token"] == 4 * total + 2 * adapters + 2 * blocks
    assert r["op"] == "chunked" and r["precision"] == "fp32" and r["device"] == "cpu"
    assert r["tokens_per_s"] > 0 and r["step_time_s"] > 0 and r["peak_rss_gib"] > 0
    assert r["matmul_flops_per_s"] > 0 and r["mfu"] > 0
    assert math.isclose(r["mfu"], r["flops_per_token"] * r["tokens_per_s"] / r["matmul_flops_per_s"])
    assert math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"])


def test_flops_without_grad_cp_drop_the_recompute():
    from rwkvft.bench import flops_per_token
    counts = {"total": 10, "trainable": 3, "blocks": 7}
    assert flops_per_token(counts, False) == 46 and flops_per_token(counts, True) == 60


@pytest.mark.parametrize("argv,msg", [
    (["--size", "3b"], "unknown --size '3b'"),
    (["--precision", "fp16"], "--precision 'fp16'"),
    (["--quant", "int4"], "--quant 'int4'"),
    (["--steps", "0"], "--steps must be positive"),
])
def test_bench_bad_input_is_one_line(capsys, argv, msg):
    assert main(["bench", "--accelerator", "cpu", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1
