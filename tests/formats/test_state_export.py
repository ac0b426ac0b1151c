"""State files: runner-state / ai00-state exports, the rwkv pip package as the oracle for the
state orientation, the baked (merged) RWKV-6/5 model, generate --state, and bad input."""
from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
import torch
from pip_state_oracle import run_jobs

import rwkvft
from rwkvft.adapters import adapter_state_dict, inject, parse_peft
from rwkvft.formats import (ai00_state_dict, fingerprint, load_model, read_state_dict, read_state_file,
                             save_adapter, write_state_dict)
from rwkvft.cli import main
from rwkvft.errors import UserError
from rwkvft.models.init import new_config, random_state_dict

TOL = 1e-4
TOKENS = [5, 17, 33, 2, 91, 64, 8, 40, 11, 0, 96]
VERSIONS = ("x070", "x060", "x052")


def _train_state(model, steps=8, lr=0.05):
    names = inject(model, parse_peft("state", {}), [])
    params = [model.get_parameter(n) for n in names]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    idx = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(7))
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return names


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per version: an fp32 base file, a briefly state-tuned model, its adapter and exports."""
    root = tmp_path_factory.mktemp("state")
    out = {}
    for v in VERSIONS:
        d = root / v
        base = write_state_dict(random_state_dict(new_config(2, 128, 97, version=v), seed=3),
                                d / "base.pth", dtype=torch.float32)
        model = load_model(base).train()
        names = _train_state(model)
        model.eval()
        adapter = save_adapter(d / "run" / "rwkv-0.pth", adapter_state_dict(model, names),
                               names.config, fingerprint(read_state_dict(base)))
        runner, ai00 = d / "s.pth", d / "s.state"
        assert main(["export", "--base", str(base), "--adapter", str(adapter),
                     "--format", "runner-state", "--output", str(runner)]) == 0
        assert main(["export", "--base", str(base), "--adapter", str(adapter),
                     "--format", "ai00-state", "--output", str(ai00)]) == 0
        with torch.no_grad():
            logits = model(torch.tensor([TOKENS]))[0]
        out[v] = {"base": base, "adapter": adapter, "runner": runner, "ai00": ai00,
                  "model": model, "logits": logits, "dir": d}
    return out


def _rel(a, b):
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


@pytest.mark.parametrize("version", ["x070", "x060"])
def test_runner_state_in_pip_rwkv_gives_our_logits(runs, version, tmp_path):
    r = runs[version]
    got, zero = run_jobs([{"model": r["base"], "version": version, "tokens": TOKENS, "state": r["runner"]},
                          {"model": r["base"], "version": version, "tokens": TOKENS, "state": None}],
                         tmp_path, v7=version == "x070")
    assert _rel(r["logits"], got) <= TOL
    assert _rel(r["logits"], zero) > 100 * TOL          # the trained state really changes the logits


def test_runner_state_file_holds_exactly_the_states(runs):
    for v, r in runs.items():
        sd = torch.load(r["runner"], weights_only=True)
        assert list(sd) == ["blocks.0.att.time_state", "blocks.1.att.time_state"]
        for i, block in enumerate(r["model"].blocks):
            assert sd[f"blocks.{i}.att.time_state"].dtype == torch.float32
            assert torch.equal(sd[f"blocks.{i}.att.time_state"], block.att.time_state.detach())


def test_ai00_state_keys_dtype_shapes_and_orientation(runs):
    from safetensors import safe_open
    for v, r in runs.items():
        with safe_open(str(r["ai00"]), framework="pt") as f:
            keys = sorted(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys}
        assert keys == ["blocks.0.att.time_state", "blocks.1.att.time_state"]
        runner = torch.load(r["runner"], weights_only=True)
        converted = ai00_state_dict(runner)      # Ai00's converter rule applied to the trainer tensor
        for k, t in tensors.items():
            assert t.dtype == torch.float16 and t.shape == (2, 64, 64)
            assert torch.equal(t, runner[k].transpose(-2, -1).to(torch.float16))
            assert torch.equal(t, converted[k])
            assert not torch.equal(t, runner[k].to(torch.float16))   # not symmetric: orientation matters


@pytest.mark.parametrize("version", VERSIONS)
def test_every_state_format_reads_back_to_the_trained_state(runs, version):
    r = runs[version]
    cfg = r["model"].config
    trained = {f"blocks.{i}.att.time_state": b.att.time_state.detach() for i, b in enumerate(r["model"].blocks)}
    for name, tol in (("runner", 0.0), ("adapter", 0.0), ("ai00", 2e-3)):
        got = read_state_file(r[name], cfg)
        for k, t in trained.items():
            assert torch.allclose(got[k], t, atol=tol * float(t.abs().max()), rtol=0), (name, k)
    model = rwkvft.load_model(r["base"], state=r["ai00"])
    assert _rel(model(torch.tensor([TOKENS]))[0].detach(), r["logits"]) <= 1e-2
    model = rwkvft.load_model(r["base"], state=r["runner"])
    assert torch.allclose(model(torch.tensor([TOKENS]))[0].detach(), r["logits"], atol=1e-5)
    rwkvft.set_state(model, None)
    assert _rel(model(torch.tensor([TOKENS]))[0].detach(), r["logits"]) > 100 * TOL


@pytest.mark.parametrize("version", ["x060", "x052"])
def test_merged_rwkv6_model_carries_the_state_for_pip_rwkv(runs, version, tmp_path):
    r = runs[version]
    out = tmp_path / "merged.pth"
    assert main(["merge", "--base", str(r["base"]), "--adapter", str(r["adapter"]),
                 "--output", str(out), "--dtype", "fp32"]) == 0
    sd = torch.load(out, weights_only=True)
    assert set(sd) == set(read_state_dict(r["base"])) | {"blocks.0.att.time_state", "blocks.1.att.time_state"}
    (got,) = run_jobs([{"model": out, "version": version, "tokens": TOKENS, "state": None}],
                      tmp_path, v7=False)
    assert _rel(r["logits"], got) <= TOL
    ours = load_model(out)(torch.tensor([TOKENS]))[0].detach()      # we read the baked state too
    assert _rel(ours, r["logits"]) <= 1e-6


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_merging_an_rwkv7_state_adapter_is_refused(runs, tmp_path, capsys):
    r = runs["x070"]
    out = tmp_path / "merged.pth"
    assert main(["merge", "--base", str(r["base"]), "--adapter", str(r["adapter"]),
                 "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rwkvft export" in err[0] and "runner-state" in err[0]
    assert not out.exists()


def test_states_for_another_model_are_refused(runs, tmp_path):
    cfg7 = runs["x070"]["model"].config
    # another version, same shapes (x060 files, x070 model): every format records what it was made for
    for path in (runs["x060"]["runner"], runs["x060"]["ai00"], runs["x060"]["adapter"]):
        with pytest.raises(UserError, match="RWKV-6"):
            read_state_file(path, cfg7)
    # another layer count / size: a foreign file without our record is still checked by shape
    three = {f"blocks.{i}.att.time_state": torch.zeros(2, 64, 64) for i in range(3)}
    torch.save(three, tmp_path / "three.pth")
    with pytest.raises(UserError, match="3 layer"):
        read_state_file(tmp_path / "three.pth", cfg7)
    small = {f"blocks.{i}.att.time_state": torch.zeros(1, 64, 64) for i in range(2)}
    torch.save(small, tmp_path / "small.pth")
    with pytest.raises(UserError, match="another model size"):
        read_state_file(tmp_path / "small.pth", cfg7)
    torch.save({**small, "blocks.0.att.ts_state": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(UserError, match="no time_state"):
        read_state_file(tmp_path / "extra.pth", cfg7)
    (tmp_path / "s.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="cannot tell the format"):
        read_state_file(tmp_path / "s.bin", cfg7)


def test_foreign_runner_state_without_record_loads(runs, tmp_path):
    """RWKV-PEFT's own state files have no rwkvft record (and may carry the 'model.' prefix)."""
    r = runs["x070"]
    sd = torch.load(r["runner"], weights_only=True)
    torch.save({f"model.{k}": v for k, v in sd.items()}, tmp_path / "peft_state.pth")
    assert not any(n.endswith("rwkvft_state.json") for n in zipfile.ZipFile(tmp_path / "peft_state.pth").namelist())
    got = read_state_file(tmp_path / "peft_state.pth", r["model"].config)
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_export_refusals_leave_files_alone(runs, tmp_path, capsys):
    r = runs["x070"]
    out = tmp_path / "s.pth"
    out.write_bytes(b"keep me")
    args = ["export", "--base", str(r["base"]), "--adapter", str(r["adapter"]), "--format", "runner-state"]
    assert main(args + ["--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(args + ["--output", str(out), "--force"]) == 0 and out.read_bytes() != b"keep me"
    before = _sha(r["base"])
    assert main(args + ["--output", str(r["base"])]) == 2
    assert _sha(r["base"]) == before
    # a MiSS adapter, and a state adapter that also trained ln, have no state file form
    model = load_model(r["base"])
    names = inject(model, parse_peft("miss", {"r": 4}), [])
    miss = save_adapter(tmp_path / "m" / "rwkv-0.pth", adapter_state_dict(model, names),
                        names.config, fingerprint(read_state_dict(r["base"])))
    model = load_model(r["base"])
    names = inject(model, parse_peft("state", {}), ["ln"])
    both = save_adapter(tmp_path / "b" / "rwkv-0.pth", adapter_state_dict(model, names),
                        names.config, fingerprint(read_state_dict(r["base"])))
    capsys.readouterr()
    for adapter, msg in ((miss, "no time_state"), (both, "cannot carry")):
        new = tmp_path / "new.pth"
        assert main(["export", "--base", str(r["base"]), "--adapter", str(adapter), "--format",
                     "ai00-state", "--output", str(new)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0] and not new.exists()
    # the adapter of another base
    assert main(["export", "--base", str(runs["x060"]["base"]), "--adapter", str(r["adapter"]),
                 "--format", "runner-state", "--output", str(tmp_path / "x.pth")]) == 2
    assert "different base" in capsys.readouterr().err


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """World-vocabulary x070 base + a state adapter + its exports (generate needs V = 65536)."""
    d = tmp_path_factory.mktemp("world")
    base = write_state_dict(random_state_dict(new_config(2, 128, 65536), seed=4), d / "base.pth",
                            dtype=torch.float32)
    model = load_model(base)
    names = inject(model, parse_peft("state", {}), [])
    with torch.no_grad():
        for n in names:
            model.get_parameter(n).normal_(0, 1, generator=torch.Generator().manual_seed(1))
    adapter = save_adapter(d / "run" / "rwkv-0.pth", adapter_state_dict(model, names),
                           names.config, fingerprint(read_state_dict(base)))
    for fmt, name in (("runner-state", "s.pth"), ("ai00-state", "s.state")):
        assert main(["export", "--base", str(base), "--adapter", str(adapter), "--format", fmt,
                     "--output", str(d / name)]) == 0
    return d, base, adapter


def _generate(capsys, base, *extra):
    capsys.readouterr()
    rc = main(["generate", "--model", str(base), "--prompt", "The", "--max_tokens", "8",
               "--temperature", "0", *extra])
    return rc, capsys.readouterr()


def test_generate_with_each_state_format(world, capsys):
    d, base, adapter = world
    rc, plain = _generate(capsys, base)
    assert rc == 0
    outs = {}
    for extra in (["--state", str(d / "s.pth")], ["--state", str(adapter)], ["--adapter", str(adapter)]):
        rc, res = _generate(capsys, base, *extra)
        assert rc == 0, res.err
        outs[tuple(extra)] = res.out
    assert len(set(outs.values())) == 1 and plain.out not in outs.values()
    rc, res = _generate(capsys, base, "--state", str(d / "s.state"))
    assert rc == 0, res.err


def test_generate_refuses_a_state_for_another_model(world, runs, capsys):
    d, base, _ = world
    rc, res = _generate(capsys, base, "--state", str(runs["x060"]["runner"]))
    lines = res.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("rwkvft: error:")
    assert "RWKV-6" in lines[0]


def test_rwkv_peft_state_file_merges_like_our_adapter(runs, tmp_path):
    """An RWKV-PEFT state file (time_state only, no adapter_config.json) is a state adapter."""
    from rwkvft.formats import merge_adapter_file
    r = runs["x060"]
    (tmp_path / "peft").mkdir()
    foreign = tmp_path / "peft" / "rwkv-0.pth"
    torch.save({f"model.{k}": v for k, v in torch.load(r["runner"], weights_only=True).items()}, foreign)
    merged, config, _ = merge_adapter_file(read_state_dict(r["base"]), foreign)
    assert config["method"] == "state"
    ours, _, _ = merge_adapter_file(read_state_dict(r["base"]), r["adapter"])
    assert set(merged) == set(ours) and all(torch.equal(merged[k], ours[k]) for k in ours)


@pytest.mark.parametrize("fmt", ("runner", "ai00", "adapter"))
def test_eval_with_a_state_scores_the_state_tuned_model(runs, fmt, tmp_path, capsys):
    """`rwkvft eval --state S` scores as the trained model does (its own forward, by hand)."""
    import numpy as np
    r = runs["x060"]
    tokens = np.array(TOKENS * 2, dtype=np.int64)
    data = tmp_path / "tokens.npy"
    np.save(data, tokens)
    idx = torch.tensor(tokens)
    with torch.no_grad():
        want = torch.nn.functional.cross_entropy(r["model"](idx[None, :-1])[0], idx[1:]).item()
    capsys.readouterr()
    args = ["eval", "--model", str(r["base"]), "--data_file", str(data), "--json"]
    assert main(args + ["--state", str(r[fmt])]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["tokens"] == len(tokens) - 1
    assert got["loss"] == pytest.approx(want, rel=1e-3 if fmt == "ai00" else 1e-5)
    assert main(args) == 0  # without the state the score differs (the state matters)
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(plain["loss"] - want) > 1e-3
