"""Padded-batch workloads for `rwkvft bench --lengths`: sample lengths and the batches made of them.

A workload is either a distribution, `lognormal:median=300,max=3000[,sigma=0.8]` (chat-like:
most records short, a long tail; max defaults to ctx_len), or a data file, whose samples are cut
exactly as `rwkvft train --dataload pad` cuts them. Batches are formed as the trainer forms
them (collate.padded_length, collate.length_groups) under one of three batchings:
ctx (every batch padded to ctx_len, as before dynamic padding), dynamic (padded to the batch's
longest sample), grouped (dynamic + --group_by_length).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..errors import UserError
from .collate import GROUP_SPAN, length_groups, padded_length

BATCHINGS = ("ctx", "dynamic", "grouped")


def _lognormal(spec: str, ctx_len: int, n: int, rng) -> np.ndarray:
    params = {"sigma": 0.8, "max": ctx_len}
    for part in filter(None, spec.split(",")):
        key, eq, value = part.partition("=")
        if not eq or key not in ("median", "sigma", "max"):
            raise UserError(f"--lengths lognormal: bad part {part!r}; write e.g. lognormal:median=300,max=3000")
        try:
            params[key] = float(value)
        except ValueError:
            raise UserError(f"--lengths lognormal: {key}={value!r} is not a number") from None
    if params.get("median", 0) < 1 or params["sigma"] <= 0 or params["max"] < 1:
        raise UserError("--lengths lognormal needs median >= 1, sigma > 0 and max >= 1, "
                        "e.g. lognormal:median=300,max=3000")
    top = min(int(params["max"]), ctx_len)
    draws = rng.lognormal(np.log(params["median"]), params["sigma"], size=n)
    return np.clip(np.rint(draws), 1, top).astype(np.int64)


def _from_file(path: str, ctx_len: int) -> np.ndarray:
    from .from_flags import resolve_data_type
    from .datasets import DataConfig, build_dataset

    data_type = resolve_data_type(SimpleNamespace(data_type="auto", data_file=path))
    ds = build_dataset(DataConfig(data_file=path, data_type=data_type, ctx_len=ctx_len, dataload="pad",
                                  epoch_steps=1))
    return ds.lengths.astype(np.int64) - 1   # a unit of n tokens makes a sample of n - 1


def sample_lengths(spec: str, ctx_len: int, micro_bsz: int, seed: int) -> np.ndarray:
    """Lengths of the samples of the workload `spec` (see the module docstring)."""
    if spec.startswith("lognormal:"):
        pool = 4 * GROUP_SPAN * micro_bsz  # several sorted spans, as a real epoch has
        return _lognormal(spec[len("lognormal:"):], ctx_len, pool, np.random.default_rng([seed, 7]))
    if spec.partition(":")[0] in ("normal", "uniform", "exponential"):
        raise UserError(f"--lengths {spec!r}: the distribution is lognormal:median=M,max=X[,sigma=S]")
    return _from_file(spec, ctx_len)


def plan_batches(lengths: np.ndarray, micro_bsz: int, batching: str, ctx_len: int,
                 seed: int) -> list[tuple[np.ndarray, int]]:
    """[(sample lengths of a micro-batch, its padded length)] for one pass, in training order."""
    if batching not in BATCHINGS:
        raise UserError(f"--batching {batching!r} is not one of {', '.join(BATCHINGS)}")
    if len(lengths) < micro_bsz:
        raise UserError(f"the workload has {len(lengths)} samples, fewer than micro_bsz {micro_bsz}")
    rng = np.random.default_rng([seed, 8])
    order = length_groups(lengths, micro_bsz, rng) if batching == "grouped" else rng.permutation(len(lengths))
    full = len(order) - len(order) % micro_bsz
    plan = []
    for i in range(0, full, micro_bsz):
        lens = lengths[order[i:i + micro_bsz]]
        plan.append((lens, ctx_len if batching == "ctx" else padded_length(int(lens.max()), ctx_len)))
    return plan


def padding_fraction(plan) -> float:
    real = sum(int(lens.sum()) for lens, _ in plan)
    positions = sum(len(lens) * t for lens, t in plan)
    return 1 - real / positions
