"""The thin CLI's library side: one device resolver, one model-assembly function that
`rwkvft.load_model`, generate and eval all use, and the Python API the commands call."""
from __future__ import annotations

import pytest
import torch

import rwkvft
from rwkvft import assembly
from rwkvft.errors import UserError
from rwkvft.hardware import resolve_device


# ---------- one device / precision resolver ----------
def test_resolve_device_on_cpu():
    if torch.cuda.is_available():
        pytest.skip("the CPU defaults need a machine without a GPU")
    hw = resolve_device("auto", "")
    assert (hw.accelerator, hw.device.type, hw.precision, hw.lightning_precision) == \
        ("cpu", "cpu", "fp32", "32-true")
    assert resolve_device("cpu", "bf16").lightning_precision == "bf16-mixed"
    with pytest.raises(UserError, match=r"^--accelerator gpu but no CUDA GPU is visible; use --accelerator cpu$"):
        resolve_device("gpu")
    with pytest.raises(UserError, match=r"^--device cuda:1 but no CUDA GPU is visible; use --device cpu$"):
        resolve_device("cuda:1", flag="--device")
    with pytest.raises(UserError, match="fp16 needs a GPU"):
        resolve_device("cpu", "fp16")
    with pytest.raises(UserError, match=r"--device 'tpu' is not one of auto, cpu, gpu"):
        resolve_device("tpu", flag="--device")
    with pytest.raises(UserError, match=r"--precision 'fp16' is not one of fp32, bf16"):
        resolve_device("cpu", "fp16", precisions=("fp32", "bf16"))


def test_tf32_is_switched_on_for_tf32_only():
    try:
        resolve_device("cpu", "tf32")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        resolve_device("cpu", "fp32")
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


# ---------- one assembly function ----------
@pytest.fixture
def lora_run(make_checkpoint, tmp_path):
    """A World-vocabulary base and a LoRA adapter file (B non-zero, so the merge changes logits)."""
    from rwkvft.adapters import inject, parse_peft
    from rwkvft.adapters import adapter_state_dict
    from rwkvft.formats import fingerprint, read_state_dict, save_adapter
    from rwkvft.models import model_from_state_dict
    base = make_checkpoint(n_layer=2, n_embd=64, vocab_size=65536, seed=3)
    model = model_from_state_dict(read_state_dict(base))
    acfg = parse_peft("lora", '{"r": 4}')
    names = inject(model, acfg, [])
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if n in names:
            p.data.normal_(0, 0.05)
    path = tmp_path / "rwkv-0.pth"
    save_adapter(path, {k: v.detach() for k, v in adapter_state_dict(model, names).items()}, acfg,
                 fingerprint(read_state_dict(base)))
    return base, path


def test_load_model_generate_and_evaluate_all_assemble_through_one_function(lora_run, monkeypatch,
                                                                           tmp_path):
    import numpy as np
    base, adapter = lora_run
    calls = []
    real = assembly.assemble_model

    def spy(*args, **kw):
        calls.append(kw.get("adapter"))
        return real(*args, **kw)

    monkeypatch.setattr(assembly, "assemble_model", spy)
    idx = torch.tensor([[5, 6, 7, 8]])
    plain = rwkvft.load_model(base)(idx)
    adapted = rwkvft.load_model(base, adapter=adapter)(idx)
    assert calls == [None, adapter]
    assert not torch.allclose(plain, adapted)   # the adapter was merged in
    text = rwkvft.generate(str(base), "Hi", max_tokens=3, temperature=0, adapter=adapter)
    assert isinstance(text, str) and calls[-1] == adapter
    data = tmp_path / "t.npy"
    np.save(data, np.arange(1, 50, dtype=np.int64))
    report = rwkvft.evaluate(base, data, adapter=adapter, compare=True, progress=False,
                             settings={"ctx_len": 16})
    assert set(report.results) == {"base", "adapted"} and calls[-2:] == [None, adapter]
    assert report.results["adapted"].loss != report.results["base"].loss


def test_generate_is_the_cli_loop(lora_run, capsys):
    from rwkvft.cli import main
    base, adapter = lora_run
    text = rwkvft.generate(str(base), "Hello", max_tokens=5, temperature=0, adapter=adapter)
    assert main(["generate", "--model", str(base), "--adapter", str(adapter), "--prompt", "Hello",
                 "--max_tokens", "5", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == text + "\n"


def test_generate_and_eval_read_device_through_the_one_resolver(make_checkpoint, capsys, tmp_path):
    import numpy as np
    from rwkvft.cli import main
    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    base = make_checkpoint(n_layer=2, n_embd=64, vocab_size=65536, seed=3)
    data = tmp_path / "t.npy"
    np.save(data, np.arange(1, 40, dtype=np.int64))
    for cmd in (["generate", "--model", str(base), "--prompt", "a"],
                ["eval", "--model", str(base), "--data_file", str(data), "--ctx_len", "16"]):
        assert main([*cmd, "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert err.strip() == "rwkvft: error: --device cuda but no CUDA GPU is visible; use --device cpu"


def test_the_recipe_refuses_eval_tasks_without_its_scorer(tmp_path):
    # --eval_tasks' scorer lives a layer above training (evaluation/during_training.py); rwkvft.train
    # hands it to the recipe as a save hook, and the recipe alone refuses the flag, never ignores it
    from rwkvft.config import TrainConfig
    from rwkvft.training.run import train
    cfg = TrainConfig(load_model="m.pth", data_file="d.npy", eval_tasks="hellaswag",
                      proj_dir=str(tmp_path / "run"))
    with pytest.raises(UserError, match=r"^--eval_tasks needs its scorer: call rwkvft.train"):
        train(cfg)
    assert not (tmp_path / "run").exists()
