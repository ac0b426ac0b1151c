"""Every method of the case table (and the suite's throw-away method) x every export format:
the format writes a file that carries the adapter's effect (read back and checked against the
merge), or refuses the method with one error line, from the method's own declaration, and
writes nothing. Which formats hold which method is the table's `exports` column."""
from __future__ import annotations

import pytest
import torch

from export_helpers import write_pair
from method_cases import CASES, ROWSCALE, ROWSCALE_EXPORTS
from rwkvft.adapters import registry as methods
from rwkvft.cli import main
from rwkvft.formats import (export_targets, merge_state_dict, read_adapter, read_model, read_state,
                            read_state_dict)
from rwkvft.models.schema import infer_config

TARGETS = [f.name for f in export_targets()]
OUTPUT = {"hf": "out_hf", "hf-peft": "out_peft", "ai00-lora": "out.st", "runner-state": "out.pth",
          "ai00-state": "out.state"}


@pytest.fixture
def rowscale():
    methods.register(ROWSCALE)
    yield ROWSCALE
    methods.unregister("rowscale")


def _close(a: dict, b: dict, tol: float) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), atol=tol, rtol=tol, msg=k)


def _carries(fmt: str, out, base_sd: dict, adapter_sd: dict, config: dict) -> None:
    """The written file has the adapter's effect, read back through our own readers."""
    merged = merge_state_dict(base_sd, adapter_sd, config)
    if fmt == "hf":   # the fla layout drops layer 0's unused v0/v1/v2
        back = read_model(out)
        assert {k for k in merged if k not in back} <= {"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}
        _close(back, {k: merged[k] for k in back}, 1e-6)
    elif fmt == "hf-peft":
        sd, cfg = read_adapter(out)
        _close(merge_state_dict(base_sd, sd, cfg), merged, 1e-5)
    elif fmt == "ai00-lora":   # W + alpha/r lora.1 @ lora.0^T, alpha as export printed it
        from safetensors.torch import load_file
        lora = load_file(str(out))
        alpha = float(config.get("_printed_alpha"))
        prefixes = [k[:-len(".lora.0")] for k in lora if k.endswith(".lora.0")]
        assert prefixes, "an Ai00 LoRA with no matrices changes nothing"
        for p in prefixes:
            down, up = lora[p + ".lora.0"].float(), lora[p + ".lora.1"].float()
            w = base_sd[p + ".weight"].float() + alpha / down.shape[1] * up @ down.t()
            torch.testing.assert_close(w, merged[p + ".weight"], atol=2e-3, rtol=2e-3)
    else:
        states = read_state(out, infer_config(base_sd))
        tol = 1e-3 if fmt == "ai00-state" else 0
        _close(states, {k: v for k, v in adapter_sd.items() if k.endswith("time_state")}, tol)


def _run(tmp_path, capsys, method, conf, fmt):
    base, adapter, _, base_sd = write_pair(tmp_path, method, conf)
    out = tmp_path / OUTPUT[fmt]
    code = main(["export", "--base", str(base), "--adapter", str(adapter), "--format", fmt,
                 "--output", str(out)])
    return code, capsys.readouterr(), out, base, adapter


def _check(tmp_path, capsys, method, conf, fmt, holds: bool):
    code, io, out, base, adapter = _run(tmp_path, capsys, method, conf, fmt)
    adapter_sd, config = read_adapter(adapter)
    if holds:
        assert code == 0, io.err
        alpha = [line for line in io.out.splitlines() if line.startswith("alpha = ")]
        config["_printed_alpha"] = alpha[0].split("=")[1] if alpha else None
        _carries(fmt, out, read_state_dict(base), adapter_sd, config)
    else:
        err = io.err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("rwkvft: error: ") and not out.exists(), io.err
        assert "Traceback" not in io.err
        return err[0]


@pytest.mark.parametrize("fmt", TARGETS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_method_by_export_format(case, fmt, tmp_path, capsys):
    msg = _check(tmp_path, capsys, case.method, case.peft_config, fmt, fmt in case.exports)
    if msg is not None:   # refused: the message is the method's (or its mode's) own declaration
        method = methods.get(case.method)
        declared = [method.why_not(), "holds no time_state", "no HF peft equivalent",
                    "W-dependent blocks"]
        assert any(d in msg for d in declared), msg


@pytest.mark.parametrize("fmt", TARGETS)
def test_throwaway_method_by_export_format(rowscale, fmt, tmp_path, capsys):
    msg = _check(tmp_path, capsys, "rowscale", {}, fmt, fmt in ROWSCALE_EXPORTS)
    if msg is not None:
        assert rowscale.why_not() in msg or "holds no time_state" in msg, msg
