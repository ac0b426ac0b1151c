"""A synthetic preference task for tests and benchmarks/bench_preference.py: prompts of random
tokens; the chosen answer is in one "style" (even token ids), the rejected one in another (odd
ids), both random content of the same length, so a held-out pair can only be ranked right by
learning the style. A random model ranks about half of them right."""
from __future__ import annotations

import torch

from ..data.preference import Pair

STYLE_LO, STYLE_HI = 40, 64   # answer tokens come from [40, 64): even = chosen, odd = rejected


def synthetic_pairs(n: int, seed: int, answer_len: int = 4) -> list[Pair]:
    g = torch.Generator().manual_seed(seed)
    half = (STYLE_HI - STYLE_LO) // 2
    pairs = []
    for _ in range(n):
        plen = int(torch.randint(3, 7, (1,), generator=g))
        prompt = torch.randint(1, STYLE_LO, (plen,), generator=g).tolist()
        even = (STYLE_LO + 2 * torch.randint(0, half, (answer_len,), generator=g)).tolist()
        odd = (STYLE_LO + 1 + 2 * torch.randint(0, half, (answer_len,), generator=g)).tolist()
        pairs.append(Pair(tuple(prompt), tuple(even + [0]), tuple(odd + [0])))
    return pairs
