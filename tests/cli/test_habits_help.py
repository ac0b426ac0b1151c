"""Issue 30, item 5: every default in every --help, one name per meaning across commands (the
other spellings kept as aliases), `rwkvft --version`."""
from __future__ import annotations

import argparse

import pytest
import torch

import rwkvft
from rwkvft.cli import COMMANDS, build_parser, main


def _sub(command):
    return build_parser(command)._subparsers._group_actions[0].choices[command]


def _missing_defaults(command) -> list[str]:
    p = _sub(command)
    fmt = p._get_formatter()
    return [a.option_strings[0] for a in p._actions
            if a.option_strings and a.help is not argparse.SUPPRESS and not a.required
            and not isinstance(a, argparse._HelpAction)
            and "default" not in fmt._get_help_string(a).lower()]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_of_every_command_shows_its_default(command, capsys):
    assert _missing_defaults(command) == []
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "(default: " in capsys.readouterr().out


def test_train_help_shows_the_defaults_of_its_flags(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 1024)" in text and "(default: miss)" in text and "(default: off)" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"rwkvft {rwkvft.__version__}"


@pytest.mark.parametrize("command, required", [
    ("merge", ["--base", "b", "--adapter", "a"]), ("export", ["--base", "b", "--adapter", "a", "--format", "hf"]),
    ("prepare", ["--input", "x.jsonl"]), ("init", ["--n_layer", "2", "--n_embd", "64"]), ("demo", []),
])
def test_force_and_overwrite_out_and_output_are_one_meaning_each(command, required):
    p = build_parser(command)
    for force in ("--force", "--overwrite"):
        for out in ("--out", "--output"):
            args = p.parse_args([command, *required, out, "x", force])
            assert args.force is True and "x" in (getattr(args, "out", None), getattr(args, "output", None))


def test_train_takes_force_for_overwrite():
    p = build_parser("train")
    assert p.parse_args(["train", "--force"]).overwrite is True
    assert p.parse_args(["train", "--overwrite"]).overwrite is True


def test_generate_names_its_token_count_max_new_tokens(tmp_path, capsys, make_checkpoint):
    p = build_parser("generate")
    assert p.parse_args(["generate", "--model", "m", "--prompt", "x", "--max_new_tokens", "3"]).max_tokens == 3
    assert p.parse_args(["generate", "--model", "m", "--prompt", "x", "--max_tokens", "3"]).max_tokens == 3
    model = make_checkpoint(n_layer=2, n_embd=128, vocab_size=65536, seed=3, dtype=torch.bfloat16)
    assert main(["generate", "--model", str(model), "--prompt", "User: hi", "--max_new_tokens", "2",
                 "--temperature", "0"]) == 0
