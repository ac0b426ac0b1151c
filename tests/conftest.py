"""Shared test fixtures: small random RWKV-7 checkpoints in the official format."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch


def available_ops() -> list[str]:
    """CPU WKV ops present in this tree (the chunked op may land after the model)."""
    ops = ["reference"]
    if importlib.util.find_spec("rwkvft.kernels.chunked") is not None:
        ops.append("chunked")
    return ops


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max|diff| / max|ref| (the parity measure used against the pip package)."""
    return float((ours.float() - ref.float()).abs().max() / ref.float().abs().max())


def pieces_vs_whole(model, idx: torch.Tensor, cuts=((0, 16), (16, 17), (17, 37))) -> float:
    """rel_err of the logits of idx fed in pieces (carrying the state) against one pass."""
    with torch.no_grad():
        whole = model(idx)
        state, pieces = None, []
        for a, b in cuts:
            out, state = model(idx[:, a:b], state, return_state=True)
            pieces.append(out)
    return rel_err(torch.cat(pieces, dim=1), whole)


def flatten_vectors(sd: dict) -> dict:
    """The (C,) vector variant met in HF/fla conversions and squeezed dumps."""
    return {k: (t.reshape(-1) if t.dim() == 3 else t) for k, t in sd.items()}


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory):
    """make_checkpoint(n_layer=2, n_embd=128, vocab_size=512, seed=0, layer0_v=True,
    flat=False, dtype=torch.float32, suffix=".pth") -> path of a random perturbed RWKV-7 file.

    Files are cached per argument set for the whole session: treat them as read-only.
    """
    from rwkvft.formats import write_state_dict
    from rwkvft.models.init import new_config, random_state_dict

    root = tmp_path_factory.mktemp("ckpt")
    cache: dict[tuple, object] = {}

    def make(n_layer=2, n_embd=128, vocab_size=512, seed=0, layer0_v=True, flat=False,
             dtype=torch.float32, suffix=".pth"):
        key = (n_layer, n_embd, vocab_size, seed, layer0_v, flat, dtype, suffix)
        if key not in cache:
            cfg = new_config(n_layer, n_embd, vocab_size)
            cfg.layer0_v = layer0_v
            sd = random_state_dict(cfg, seed=seed)
            if flat:
                sd = flatten_vectors(sd)
            name = "_".join(str(k).replace("torch.", "") for k in key[:-1]).replace(".", "")
            cache[key] = write_state_dict(sd, root / f"m_{name}{suffix}", dtype=dtype)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def pip_rwkv():
    """pip_rwkv(path) -> the `rwkv` package's RWKV_x070 model ('cpu fp32'), the logits oracle."""
    os.environ["RWKV_V7_ON"] = "1"  # the pip package reads these at import time
    os.environ.setdefault("RWKV_JIT_ON", "0")  # eager mode: same maths, no TorchScript warm-up
    import rwkv.model as rwkv_model  # test dependency (pyproject [test]); missing = failure

    def load(path):
        path = str(path)
        assert path.endswith(".pth")
        return rwkv_model.RWKV(model=path[:-len(".pth")], strategy="cpu fp32")

    return load


@pytest.fixture(scope="module")
def small_model(make_checkpoint):
    """A tiny RWKV-7 with a 256-token vocabulary, for fast training runs."""
    return make_checkpoint(n_layer=2, n_embd=128, vocab_size=256, seed=5)


@pytest.fixture(scope="module")
def tokens_npy(tmp_path_factory):
    """A repeating 97-token pattern (memorizable) as a .npy token file, ids in 1..255."""
    import numpy as np
    p = tmp_path_factory.mktemp("tok") / "tokens.npy"
    rng = np.random.default_rng(0)
    np.save(p, np.tile(rng.integers(1, 256, size=97), 30).astype(np.int64))
    return p
