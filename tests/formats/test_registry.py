"""docs/internals.md "Adding a format", followed literally with a throw-away format: one record
registered at run time, and every entry point (read_model, load_model, export) uses it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from export_helpers import IDX, write_pair
from method_cases import ROWSCALE
from rwkvft.adapters import registry as methods
from rwkvft.errors import UserError
from rwkvft.formats import Format, export, load_model, read_model, register, unregister
from rwkvft.models import model_from_state_dict
from rwkvft.models.init import new_config, random_state_dict


def _read_npz(path) -> dict:
    with np.load(path) as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


def _export_deltas(base_sd, adapter_sd, config, output, options):
    """A toy target holding one low-rank product per adapted Linear (needs="low_rank")."""
    method = methods.get(config["method"])
    arrays = {}
    for key, t in adapter_sd.items():
        prefix, _, local = key.rpartition(".")
        if local == method.suffixes[0]:
            parts = {s: adapter_sd[f"{prefix}.{s}"] for s in method.suffixes}
            up, down, scale = method.factors(parts, config, base_sd[prefix + ".weight"], "npz-delta")
            arrays[prefix] = (scale * up @ down).numpy()
    np.savez(output, **arrays)
    return [f"wrote {len(arrays)} deltas"]


@pytest.fixture
def npz_formats():
    model = register(Format(name="npz-model", kind="model", what="test-only: a model as .npz",
                            recognise=lambda p: p.is_file() and p.suffix == ".npz", read=_read_npz))
    target = register(Format(name="npz-delta", kind="adapter", what="test-only: dense deltas",
                             recognise=lambda p: False, export=_export_deltas, needs="low_rank"))
    yield model, target
    unregister("npz-model")
    unregister("npz-delta")


def test_a_registered_format_is_read_by_every_model_entry_point(npz_formats, tmp_path):
    cfg = new_config(n_layer=2, n_embd=64, vocab_size=97, head_size=16)
    sd = {k: v.float() for k, v in random_state_dict(cfg, seed=4).items()}
    np.savez(tmp_path / "m.npz", **{k: v.numpy() for k, v in sd.items()})
    back = read_model(tmp_path / "m.npz")
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "m.npz")(IDX), model_from_state_dict(sd)(IDX))


def test_a_registered_export_target_holds_or_refuses_by_the_method_declaration(npz_formats, tmp_path):
    base, adapter, model, base_sd = write_pair(tmp_path / "lora", "lora", {"r": 4, "lora_alpha": 8})
    out = tmp_path / "d.npz"
    assert export(base, adapter, "npz-delta", out) == ["wrote 12 deltas"]
    methods.register(ROWSCALE)
    try:
        base, adapter, _, _ = write_pair(tmp_path / "rs", "rowscale", {})
        with pytest.raises(UserError, match="--format npz-delta cannot hold a rowscale adapter"):
            export(base, adapter, "npz-delta", tmp_path / "r.npz")
        assert not (tmp_path / "r.npz").exists()
    finally:
        methods.unregister("rowscale")
