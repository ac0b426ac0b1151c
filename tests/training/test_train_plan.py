"""The recipe's first step checks every option before the base model is read: with a base
path that does not exist, each bad option must still be the error reported."""
from __future__ import annotations

import pytest

from rwkvft.cli import main


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rwkvft: error: ")
    return err[0]


@pytest.mark.parametrize("flags,msg", [
    (["--dataload", "chunks"], "unknown dataload 'chunks'"),
    (["--loss_mask", "answers"], "unknown loss_mask 'answers'"),
    (["--op", "fast"], "unknown --op 'fast'"),
    (["--op", "cuda"], "--op cuda needs an NVIDIA GPU"),
    (["--peft", "lora", "--peft_config", '{"layers": "5-2"}'], "layers '5-2' ends before it starts"),
    (["--peft", "none", "--quant", "nf4"], "--quant nf4 stores the frozen base under adapters"),
    (["--data_type", "numpy", "--dataload", "only", "--micro_bsz", "2"], "micro_bsz must be 1"),
])
def test_bad_options_are_reported_before_the_base_is_read(capsys, tmp_path, flags, msg):
    data = tmp_path / "t.npy"
    data.write_bytes(b"")
    base = tmp_path / "missing-base.pth"             # reading it would be a different error
    line = _err(capsys, ["train", "--load_model", str(base), "--proj_dir", str(tmp_path / "p"),
                         "--data_file", str(data), "--accelerator", "cpu", *flags])
    assert msg in line and "missing-base" not in line
    assert not (tmp_path / "p").exists()            # nothing written either
