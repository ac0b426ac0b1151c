"""Issue 29, tracebacks and poor messages: each foreign or mistaken input is one `rwkvft: error:`
line (exit 2, no traceback, no user file changed), or, where the input was right, works."""
from __future__ import annotations

import json
import shutil
import zipfile

import lightning  # noqa: F401  imported at collection so its log handler binds the session's
import pytest  # stderr, not one test's capture (closed after that test)
import torch

from reliability_helpers import assert_unchanged, expect_error, make_adapter, snapshot, train_flags
from rwkvft.cli import main


def cli(argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def made(small_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("r2")
    out = {m: make_adapter(small_model, root / m, m, conf) for m, conf in
           (("state", {}), ("lora", {"r": 4, "lora_alpha": 8}), ("miss", {"r": 4}), ("none", {}))}
    for m in ("lora", "miss"):
        out[f"hf-peft-{m}"] = root / f"hf-peft-{m}"
        assert cli(["export", "--base", small_model, "--adapter", out[m], "--format", "hf-peft",
                     "--output", out[f"hf-peft-{m}"]]) == 0
    out["runner"] = root / "state.pth"
    assert cli(["export", "--base", small_model, "--adapter", out["state"], "--format", "runner-state",
                 "--output", out["runner"]]) == 0
    return out


def _with_zip_entry(src, dst, suffix, data: bytes):
    """Copy zip `src` to `dst` with the entry ending in `suffix` replaced by `data`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            body = data if item.filename.endswith(suffix) else zin.read(item.filename)
            zout.writestr(item, body)
    return dst


# ---------------------------------------------------------------- tracebacks
@pytest.mark.parametrize("meta", ["[1, 2]", '"x070"', '{"n_layer": [2]}', '{"version": null}'])
def test_state_file_metadata_of_the_wrong_type(capsys, made, small_model, tmp_path, meta):
    bad = _with_zip_entry(made["runner"], tmp_path / "s.pth", "rwkvft_state.json", meta.encode())
    before = snapshot(tmp_path, small_model)
    expect_error(capsys, ["generate", "--model", small_model, "--state", bad, "--prompt", "x",
                          "--max_tokens", "2"], str(bad), "rwkvft_state.json")
    assert_unchanged(before)


@pytest.mark.parametrize("saved, needles", [
    ({"ctx_len": "16"}, ["'ctx_len' must be a whole number", "text"]),
    ({"micro_bsz": [2]}, ["'micro_bsz' must be a whole number", "a list"]),
    ({"sft_field": "prompt"}, ["'sft_field' must be a list of names"]),
    ({"sft_field": ["prompt"]}, ["sft_field needs exactly two names"]),
    ([1, 2], ["holds a list, not a JSON object"]),
])
def test_eval_with_a_train_config_of_wrong_types(capsys, made, small_model, tokens_npy, tmp_path,
                                                 saved, needles):
    run = shutil.copytree(made["lora"].parent, tmp_path / "run")
    (run / "train_config.json").write_text(json.dumps(saved))
    before = snapshot(tmp_path, small_model, tokens_npy)
    expect_error(capsys, ["eval", "--model", small_model, "--adapter", run / "rwkv-0.pth",
                          "--data_file", tokens_npy, "--data_type", "numpy", "--progress", "0"],
                 *needles)
    assert_unchanged(before)


def _disk_full(monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')
    monkeypatch.setattr(safetensors.torch, "save_file", full)


@pytest.mark.parametrize("fmt, name, force", [("ai00-lora", "out.st", False), ("hf", "hf", False),
                                              ("hf", "hf", True)])
def test_export_onto_a_full_disk(capsys, made, small_model, tmp_path, monkeypatch, fmt, name, force):
    out = tmp_path / name
    if force:  # a previous export that must survive
        assert cli(["export", "--base", small_model, "--adapter", made["lora"], "--format", fmt,
                     "--output", out]) == 0
    before = snapshot(tmp_path, small_model, made["lora"])
    _disk_full(monkeypatch)
    msg = expect_error(capsys, ["export", "--base", small_model, "--adapter", made["lora"],
                                "--format", fmt, "--output", out] + (["--force"] if force else []),
                       f"could not write {out}", "is the disk full?", "No space left on device")
    assert (f"the previous {out} is intact" if force else f"no {out} was written") in msg
    assert_unchanged(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if force else [])


@pytest.mark.parametrize("method, field, value, needles", [
    ("lora", "r", "8", ["'r' must be a whole number > 0", "text"]),
    ("lora", "r", None, ["'r' must be a whole number > 0", "null"]),
    ("miss", "init_weights", ["bat"], ["'init_weights' must be true, false or a name", "a list"]),
    ("lora", "lora_alpha", "8", ["'lora_alpha' must be a finite number", "text"]),
])
def test_adapter_init_from_an_hf_peft_folder_with_wrong_types(capsys, made, small_model, tokens_npy,
                                                              tmp_path, method, field, value, needles):
    folder = shutil.copytree(made[f"hf-peft-{method}"], tmp_path / "peft")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, field: value}))
    before = snapshot(tmp_path, small_model, tokens_npy)
    conf = '{"r":4,"lora_alpha":8}' if method == "lora" else '{"r":4}'
    expect_error(capsys, train_flags(small_model, tmp_path / "p", tokens_npy, peft=method,
                                     peft_config=conf, adapter_init=folder),
                 "adapter_config.json", *needles)
    assert_unchanged(before)


@pytest.mark.parametrize("layers, needle", [("0-1000000000000000", "goes past layer 4095"),
                                            ("²", "is not a layer range")])
def test_layer_ranges_that_are_no_layers(capsys, small_model, tokens_npy, tmp_path, layers, needle):
    before = snapshot(small_model, tokens_npy)
    expect_error(capsys, train_flags(small_model, tmp_path / "p", tokens_npy,
                                     peft_config=json.dumps({"r": 4, "layers": layers})), needle)
    assert_unchanged(before)


# ---------------------------------------------------------------- messages
def test_state_file_layer_gap_names_the_missing_layer(capsys, made, small_model, tmp_path):
    sd = torch.load(made["runner"], weights_only=True)
    gap = {"blocks.0.att.time_state": sd["blocks.0.att.time_state"],
           "blocks.5.att.time_state": sd["blocks.1.att.time_state"]}
    torch.save(gap, tmp_path / "gap.pth")
    before = snapshot(tmp_path, small_model)
    msg = expect_error(capsys, ["generate", "--model", small_model, "--state", tmp_path / "gap.pth",
                                "--prompt", "x", "--max_tokens", "2"],
                       "no state for layer(s) 1", "layer(s) 5, which the model does not have")
    assert "2 layer(s), the model has 2" in msg
    assert_unchanged(before)


@pytest.mark.parametrize("method, needles", [("state", ["a state adapter has no adapter matrices",
                                                        "--format runner-state"]),
                                             ("none", ["a none adapter has no adapter matrices",
                                                       "--format hf"])])
def test_hf_peft_export_of_matrixless_adapters_names_the_method(capsys, made, small_model, tmp_path,
                                                                 method, needles):
    before = snapshot(small_model, made[method].parent)
    msg = expect_error(capsys, ["export", "--base", small_model, "--adapter", made[method],
                                "--format", "hf-peft", "--output", tmp_path / "o"], *needles)
    assert "train_parts" not in msg
    assert_unchanged(before)
    assert not (tmp_path / "o").exists()


def test_adapter_init_from_a_state_adapter_starts_a_state_run(made, small_model, tokens_npy, tmp_path):
    proj = tmp_path / "p"
    assert cli(train_flags(small_model, proj, tokens_npy, peft="state", peft_config="{}",
                            adapter_init=made["state"], epoch_count=1, lr_init=1e-9)) == 0
    log = (proj / "train_log.txt").read_text()
    assert "adapter_init: loaded 2 tensors (2 adapter matrices)" in log
    # with a learning rate of 1e-9 the trained state is the initial one: the file's
    got, want = torch.load(proj / "rwkv-0.pth", weights_only=True), torch.load(made["state"], weights_only=True)
    for k in want:
        assert torch.allclose(got[k].float(), want[k].float(), atol=1e-6), k


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_export_lora_alpha_not_finite_blames_the_flag(capsys, made, small_model, tmp_path, value):
    before = snapshot(small_model, made["lora"].parent)
    msg = expect_error(capsys, ["export", "--base", small_model, "--adapter", made["lora"],
                                "--format", "ai00-lora", "--output", tmp_path / "o.st",
                                "--lora_alpha", value], "--lora_alpha must be a positive number")
    assert "diverged" not in msg
    assert_unchanged(before)


@pytest.mark.parametrize("kind, needle", [("empty", "has no adapter_config.json"),
                                          ("hf-model", "is an HF model folder")])
def test_adapter_init_from_a_folder_that_is_nomake_adapter(capsys, small_model, tokens_npy, tmp_path,
                                                       kind, needle):
    folder = tmp_path / "f"
    if kind == "hf-model":
        assert cli(["export", "--base", small_model, "--adapter", make_adapter(small_model, tmp_path / "a",
                     "lora", {"r": 4, "lora_alpha": 8}), "--format", "hf", "--output", folder]) == 0
    else:
        folder.mkdir()
    before = snapshot(tmp_path, small_model, tokens_npy)
    msg = expect_error(capsys, train_flags(small_model, tmp_path / "p", tokens_npy, adapter_init=folder),
                       needle)
    assert "not valid JSON" not in msg
    assert_unchanged(before)


def test_eval_refuses_a_damaged_model_as_train_does(capsys, small_model, tokens_npy, tmp_path):
    sd = torch.load(small_model, weights_only=True)
    sd["blocks.1.att.key.weight"][3, 5] = float("nan")
    torch.save(sd, tmp_path / "nan.pth")
    before = snapshot(tmp_path, tokens_npy)
    needles = ("has NaN or Inf values in blocks.1.att.key.weight", "damaged")
    expect_error(capsys, ["eval", "--model", tmp_path / "nan.pth", "--data_file", tokens_npy,
                          "--data_type", "numpy", "--ctx_len", "16", "--progress", "0"], *needles)
    expect_error(capsys, ["eval", "--model", small_model, "--base", tmp_path / "nan.pth", "--compare",
                          "--data_file", tokens_npy, "--data_type", "numpy", "--ctx_len", "16",
                          "--progress", "0"], *needles)
    expect_error(capsys, train_flags(tmp_path / "nan.pth", tmp_path / "p", tokens_npy), *needles)
    assert_unchanged(before)


def test_export_cleans_its_own_stale_temps(made, small_model, tmp_path):
    out = tmp_path / "hf"
    stale = tmp_path / ".hf.ab12CD_9.tmp"   # what a kill -9 mid-export leaves (atomic_dir)
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "model.safetensors").write_bytes(b"x" * 1000)
    stale_file = tmp_path / ".out.st.Zz99aa00.tmp"  # atomic_path's, for another output: kept
    stale_file.write_bytes(b"y")
    parked = tmp_path / ".hf.Qq11Ww22.old"  # a replaced folder parked before out exists: kept
    (parked / "x").mkdir(parents=True)
    mine = tmp_path / ".hf.notmine.tmp"  # not our name pattern: kept
    mine.write_bytes(b"z")
    assert cli(["export", "--base", small_model, "--adapter", made["lora"], "--format", "hf",
                 "--output", out]) == 0
    assert not stale.exists() and stale_file.exists() and parked.exists() and mine.exists()
    assert (out / "config.json").exists()
    # once the output exists again, a parked old folder of it is garbage too
    assert cli(["export", "--base", small_model, "--adapter", made["lora"], "--format", "hf",
                 "--output", out, "--force"]) == 0
    assert not parked.exists() and mine.exists()


@pytest.mark.parametrize("fmt", ["st", "pth"])
def test_merge_onto_a_full_disk(capsys, made, small_model, tmp_path, monkeypatch, fmt):
    """The sibling of the export case: safetensors' and torch's own disk-full errors."""
    out = tmp_path / f"m.{fmt}"
    assert cli(["merge", "--base", small_model, "--adapter", made["lora"], "--output", out]) == 0
    before = snapshot(tmp_path, small_model, made["lora"])
    _disk_full(monkeypatch)
    import rwkvft.checkpoint.rwkv_format as rf

    def torch_full(*a, **k):  # torch's zip writer reports a full disk this way
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
    monkeypatch.setattr(rf.torch, "save", torch_full)
    expect_error(capsys, ["merge", "--base", small_model, "--adapter", made["lora"], "--output", out,
                          "--force"], f"could not write {out}", "is the disk full?",
                 f"the previous {out} is intact")
    assert_unchanged(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
