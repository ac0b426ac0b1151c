"""One flag, one place: a flag declared once (config/flags.py) reaches `--help`, the range check,
train_config.json and `rwkvft eval` with no other edit; every flag of every command shows its
default in `--help`."""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from rwkvft.cli import COMMANDS, build_parser, main
from rwkvft.config import (FLAGS, RANGES, Flag, Range, TrainConfig, add_train_arguments, declare,
                           resolve_config, undeclare)
from rwkvft.errors import UserError


@pytest.fixture
def knob():
    """A data flag added to the declaration at run time (and removed after the test)."""
    flag = Flag("test_knob", 0.25, "a knob only this test declares", Range(0, 1, hint="a fraction"),
                eval=True, must_match="what this test trains")
    declare(flag)
    from rwkvft.training.resume_rules import MUST_MATCH, SAFE
    assert MUST_MATCH["test_knob"] == "what this test trains" and "test_knob" not in SAFE
    yield flag
    undeclare(flag.name)
    assert "test_knob" not in MUST_MATCH
    assert "test_knob" not in FLAGS and "test_knob" not in RANGES
    assert "test_knob" not in {f.name for f in dataclasses.fields(TrainConfig)}


def _help(command: str) -> str:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command].format_help()


def _resolve(*argv):
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return resolve_config(p.parse_args(["--load_model", "m.pth", "--data_file", "d.npy", *argv]))


def test_a_flag_added_at_run_time_reaches_help_ranges_config_json_and_eval(knob, tmp_path):
    # --help of train (with its default) and of eval
    train_help = " ".join(_help("train").split())
    assert "--test_knob TEST_KNOB a knob only this test declares (default: 0.25)" in train_help
    assert "--test_knob" in _help("eval")
    # TrainConfig and the range check
    assert TrainConfig().test_knob == 0.25
    assert _resolve("--test_knob", "0.5").test_knob == 0.5
    with pytest.raises(UserError, match=r"--test_knob must be in \[0, 1\], got 1.5; a fraction"):
        _resolve("--test_knob", "1.5")
    # train_config.json (what a run writes is cfg.to_json(), training/run.py)
    assert json.loads(_resolve("--test_knob", "0.75").to_json())["test_knob"] == 0.75
    # rwkvft eval: read from a run's train_config.json, overridden by the flag
    from rwkvft.evaluation.data_eval import eval_settings
    saved = tmp_path / "train_config.json"
    saved.write_text(json.dumps({"test_knob": 0.125, "ctx_len": 64}), encoding="utf-8")
    assert eval_settings("m.pth", "d.npy", None, saved, {}).test_knob == 0.125
    assert eval_settings("m.pth", "d.npy", None, saved, {"test_knob": 0.5}).test_knob == 0.5
    with pytest.raises(UserError, match="--test_knob must be"):
        eval_settings("m.pth", "d.npy", None, saved, {"test_knob": 2.0})


def test_eval_takes_a_run_time_flag_on_its_command_line(knob, small_model, tmp_path, capsys):
    import numpy as np
    tokens = tmp_path / "few.npy"
    np.save(tokens, np.arange(1, 97, dtype=np.int64))  # three 32-token windows: a quick score
    assert main(["eval", "--model", str(small_model), "--data_file", str(tokens),
                 "--ctx_len", "32", "--test_knob", "0.5", "--json", "--progress", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] > 0
    assert main(["eval", "--model", str(small_model), "--data_file", str(tokens),
                 "--test_knob", "3"]) == 2
    assert "--test_knob must be in [0, 1], got 3.0" in capsys.readouterr().err


def test_a_written_run_config_holds_every_declared_flag(knob, small_model, tokens_npy, tmp_path):
    from rwkvft.training.run import train
    cfg = _resolve("--test_knob", "0.5", "--ctx_len", "32", "--epoch_steps", "1", "--accelerator",
                   "cpu", "--proj_dir", str(tmp_path / "run"), "--progress", "0")
    cfg.load_model, cfg.data_file = str(small_model), str(tokens_npy)
    train(cfg)
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text(encoding="utf-8"))
    assert saved["test_knob"] == 0.5 and set(saved) == set(FLAGS)


def test_declare_refuses_a_duplicate_and_a_numeric_flag_without_range():
    with pytest.raises(ValueError, match="already declared"):
        declare(Flag("ctx_len", 1, "again", Range(1)))
    with pytest.raises(ValueError, match="needs a Range"):
        declare(Flag("unranged_knob", 3, "no range", safe="s"))
    assert "unranged_knob" not in FLAGS
    # --resume must know whether the flag may change: exactly one of must_match= / safe=
    for kw in ({}, {"must_match": "m", "safe": "s"}):
        with pytest.raises(ValueError, match="exactly one of must_match= or safe="):
            declare(Flag("unclassified_knob", "x", "no resume rule", **kw))
    assert "unclassified_knob" not in FLAGS


def test_data_flags_are_dataconfig_fields_and_reach_it():
    from rwkvft.config.data_config import data_config
    from rwkvft.data import DataConfig
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    cfg = _resolve("--data_type", "numpy", "--ctx_len", "77", "--user_role", "Q", "--random_seed", "9")
    dcfg = data_config(cfg)
    for flag in FLAGS.values():
        if flag.data:
            assert flag.name in fields, flag.name
            want = getattr(cfg, flag.name)
            assert getattr(dcfg, flag.name) == (tuple(want) if isinstance(want, list) and want else
                                                None if want == [] else want), flag.name
    assert (dcfg.ctx_len, dcfg.user_role, dcfg.random_seed) == (77, "Q", 9)


# ---------- every flag's default in --help (issue 30 item 5) ----------
def _flags_without_default(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    missing = []
    for action in parser._actions:
        if (not action.option_strings or action.required or action.help == argparse.SUPPRESS
                or isinstance(action, argparse._HelpAction)):
            continue
        if "default" not in formatter._expand_help(action):
            missing.append(action.option_strings[-1])
    return missing


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_of_every_command_shows_its_default(command):
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert _flags_without_default(sub.choices[command]) == []
    assert "default" in _help(command)


def test_the_default_scan_finds_a_flag_without_one():
    plain = argparse.ArgumentParser()
    plain.add_argument("--undocumented", type=int, default=3, help="a number")
    plain.add_argument("--named", type=int, default=3, help="three (default: 3)")
    assert _flags_without_default(plain) == ["--undocumented"]
