"""Issue 30, items 3 and 4: every flag problem in one run (one line each), the bf16-on-CPU note,
and a pointer for each flag and method name of RWKV-PEFT (spec rwkv_peft_features.md §1, §4.1),
"did you mean" for a typo of every train flag."""
from __future__ import annotations

import json

import pytest
import torch

from rwkvft.adapters import registry
from rwkvft.cli import build_parser, main
from rwkvft.cli.foreign_flags import pointer, unknown_flags
from rwkvft.config.flags import FOREIGN_METHODS, IGNORED_FLAGS

# every train.py flag the spec lists (§1a-§1h, the OLD ones of §1f included), with a value
SPEC_FLAGS = {
    "load_model": "m.pth", "proj_dir": "out", "my_testing": "x070", "n_layer": "2", "n_embd": "128",
    "vocab_size": "65536", "ctx_len": "64", "dim_att": "0", "dim_ffn": "0", "head_size_a": "64",
    "head_size_divisor": "8", "pre_ffn": "0", "head_qk": "0", "tiny_att_dim": "0",
    "tiny_att_layer": "-999", "my_pos_emb": "0", "load_partial": "0", "my_ffn_shift": "1",
    "my_att_shift": "1", "dropout": "0",
    "data_file": "d.jsonl", "data_type": "jsonl", "dataload": "pad", "loss_mask": "qa",
    "mask_id": '{"mask0":"0","mask1":"1"}', "data_shuffle": "1", "sft_field": "query",
    "sft_split": "train", "magic_prime": "0", "my_exit_tokens": "0", "my_pile_stage": "0",
    "my_pile_version": "1", "my_pile_shift": "-1", "my_pile_edecay": "0", "my_qa_mask": "0",
    "my_random_steps": "0", "my_sample_len": "0", "num_workers": "0", "persistent_workers": "",
    "prefetch_factor": "2",
    "epoch_steps": "10", "epoch_count": "1", "epoch_begin": "0", "epoch_save": "1",
    "micro_bsz": "1", "accumulate_grad_batches": "1", "lr_init": "1e-5", "lr_final": "1e-5",
    "warmup_steps": "0", "lr_schedule": "wsd", "my_exit": "1", "random_seed": "0",
    "beta1": "0.9", "beta2": "0.99", "adam_eps": "1e-8", "weight_decay": "0",
    "weight_decay_final": "-1", "layerwise_lr": "1", "optim": "adam_mini", "optimizer": "muon",
    "accelerator": "cpu", "strategy": "auto", "devices": "1", "num_nodes": "1", "precision": "fp32",
    "grad_cp": "0", "ds_bucket_mb": "200", "op": "auto", "fused_kernel": "", "fla": "",
    "peft": "miss", "peft_config": '{"r":8}', "merge": "1", "train_parts": "ln",
    "lora_config": '{"lora_load":"","lora_r":8,"lora_alpha":32,"lora_dropout":0.01}',
    "pissa_config": '{"pissa_load":"","pissa_init":"","pissa_r":8,"svd_niter":4}',
    "disha_config": '{"mode":"bone","load":"","r":64}', "miss_config": '{"mode":"bat","load":"","r":64}',
    "bone_config": '{"bone_load":"","bone_r":64}',
    "lora": "", "lora_r": "8", "lora_alpha": "32", "lora_dropout": "0.01", "lora_load": "a.pth",
    "lora_parts": "att,ln,time", "PISSA": "", "svd_niter": "4", "pissa_load": "p.pth",
    "pissa_init": "i.pth", "LISA": "", "lisa_r": "2", "lisa_k": "100", "emb": "", "state_tune": "",
    "compile": "", "l2warp_sparse": "", "dataset_get": "", "rwkv_version": "7",
    "quant": "none", "train_type": "infctx", "chunk_ctx": "512", "wandb": "proj", "avg_loss": "0",
}
SPEC_METHODS = ("none", "lora", "miss", "state", "adalora", "prefix", "pissa", "disha", "bone", "lisa")


def _train_options() -> list[str]:
    sub = build_parser("train")._subparsers._group_actions[0].choices["train"]
    return [o for a in sub._actions for o in a.option_strings if o.startswith("--")]


@pytest.mark.parametrize("flag", sorted(SPEC_FLAGS))
def test_every_rwkv_peft_flag_works_or_points_somewhere(flag):
    value = SPEC_FLAGS[flag]
    if f"--{flag}" in _train_options():
        return   # taken: our flag of the same name and meaning, or IGNORED_FLAGS (a note)
    lines = unknown_flags([f"--{flag}", *([value] if value else [])], _train_options(), "train")
    assert len(lines) == 1 and lines[0] == pointer(f"--{flag}", [value]) != "", lines
    assert "--" in lines[0].split(":", 1)[1] or "rwkvft" in lines[0], lines   # names what to use


def test_ignored_flags_say_so(capsys, tmp_path, small_model, tokens_npy):
    from rwkvft.config import resolve_config
    args = build_parser("train").parse_args(["train", "--load_model", str(small_model),
                                             "--data_file", str(tokens_npy), "--dim_att", "0"])
    resolve_config(args)
    assert f"--dim_att is accepted for RWKV-PEFT scripts but ignored: {IGNORED_FLAGS['dim_att']}" \
        in capsys.readouterr().out


@pytest.mark.parametrize("name", SPEC_METHODS)
def test_every_rwkv_peft_method_name_trains_or_points_somewhere(capsys, tmp_path, small_model,
                                                                tokens_npy, name):
    from rwkvft.config import resolve_config
    args = build_parser("train").parse_args(["train", "--load_model", str(small_model),
                                             "--data_file", str(tokens_npy), "--peft", name])
    try:
        cfg = resolve_config(args)
    except Exception as e:   # refused: with a pointer to what to use
        assert name in FOREIGN_METHODS and FOREIGN_METHODS[name] in str(e), str(e)
        return
    method = registry.get(name)
    assert cfg.peft == method.name
    out = capsys.readouterr().out
    if name != method.name:   # another name of one of ours: trained, with a note
        assert f"--peft {name} is RWKV-PEFT's name for what rwkvft calls --peft {method.name}" in out


def test_config_flags_are_spelled_out_from_their_value():
    text = pointer("--bone_config", ['{"bone_load":"","bone_r":64}'])
    assert text.endswith("here: --peft miss --peft_config '{\"r\": 64}'")
    text = pointer("--lora_config", ['{"lora_load":"a.pth","lora_r":8,"lora_alpha":32,"lora_dropout":0.01}'])
    assert text.endswith("--peft lora --peft_config '{\"r\": 8, \"alpha\": 32, \"dropout\": 0.01}' "
                         "--adapter_init a.pth")
    # what it says is accepted: the spelled-out peft_config parses for that method
    conf = json.loads(text.split("--peft_config '", 1)[1].split("'", 1)[0])
    assert registry.parse_peft("lora", conf).r == 8


@pytest.mark.parametrize("flag", [f for f in _train_options() if f not in ("--help",)])
def test_a_typo_of_every_train_flag_gets_did_you_mean(flag):
    typo = flag[:2] + flag[2] + flag[2:]          # --peft_config -> --ppeft_config
    lines = unknown_flags([typo, "1"], _train_options(), "train")
    assert lines == [f"unknown flag {typo}; did you mean {flag}? (see `rwkvft train --help`)"]


def test_unknown_flags_reach_the_user_one_line_each(capsys, small_model, tokens_npy):
    assert main(["train", "--load_model", str(small_model), "--data_file", str(tokens_npy),
                 "--peft_confg", "{}", "--bone_config", "{}", "--epoch_stpes", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(l.startswith("rwkvft: error: ") for l in err)
    assert "did you mean --peft_config?" in err[0] and "did you mean --epoch_steps?" in err[2]
    assert "`rwkvft train --help`" in err[0]


def test_peft_config_keys_of_other_tools_get_did_you_mean():
    with pytest.raises(Exception) as e:
        registry.parse_peft("miss", {"rank": 8})
    assert "unknown key 'rank' for miss (did you mean 'r'?)" in str(e.value)


# ---------- item 3: every problem in one run ----------
def miss_sh_flags(model, data, proj):
    """The tutorial's miss.sh as written for a 1.5B model on 4 GPUs (paths changed)."""
    return ["train", "--load_model", str(model), "--proj_dir", str(proj), "--data_file", str(data),
            "--vocab_size", "65536", "--data_type", "jsonl", "--n_layer", "24", "--n_embd", "2048",
            "--ctx_len", "4096", "--micro_bsz", "4", "--epoch_steps", "1000", "--epoch_count", "4",
            "--epoch_save", "1", "--lr_init", "1e-5", "--lr_final", "1e-5", "--accelerator", "gpu",
            "--precision", "bf16", "--devices", "4", "--strategy", "deepspeed_stage_1",
            "--grad_cp", "1", "--my_testing", "x070", "--peft", "miss", "--peft_config", '{"r":64}']


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only case")
def test_miss_sh_on_a_cpu_machine_prints_every_problem_at_once(capsys, tmp_path, make_checkpoint):
    model = make_checkpoint(n_layer=2, n_embd=128, vocab_size=65536, seed=3, dtype=torch.bfloat16)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "User: hi\n\nAssistant: hello"}) + "\n", encoding="utf-8")
    assert main(miss_sh_flags(model, data, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(l.startswith("rwkvft: error: ") for l in err)
    assert [l.split()[2] for l in err] == ["--accelerator", "--strategy", "--n_layer", "--n_embd"], err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only case")
def test_bf16_on_cpu_gets_one_note(capsys, small_model, tokens_npy, tmp_path):
    from rwkvft.config import TrainConfig
    from rwkvft.training.run import plan_run
    plan_run(TrainConfig(load_model=str(small_model), data_file=str(tokens_npy),
                         proj_dir=str(tmp_path / "p"), accelerator="cpu", precision="bf16"))
    out = capsys.readouterr().out
    assert out.count("rwkvft: note: --precision bf16 on CPU is about 100x slower than fp32") == 1
    plan_run(TrainConfig(load_model=str(small_model), data_file=str(tokens_npy),
                         proj_dir=str(tmp_path / "p"), accelerator="cpu"))
    assert "bf16" not in capsys.readouterr().out
