"""`rwkvft demo`: the whole workflow on CPU in a few minutes, with nothing to download.

1. `init` a tiny RWKV-7 (World vocabulary, so the real tokenizer works),
2. write the bundled sample chat dataset,
3. train MiSS on it (the loss falls visibly: the data is small enough to memorize), holding out
   10% of the conversations for validation and generating a sample at every epoch's save,
4. merge the adapter into a bf16 .pth,
5. generate from the merged model, and print where everything is.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .errors import UserError

PROMPT = "User: Who founded Velmora?\n\nAssistant:"


# What the demo writes in --out (besides the run files in run/, see training.safety):
# `--force` removes exactly these, so anything else in the folder survives.
DEMO_FILES = ("demo-base.pth", "chat.jsonl", "demo-merged.pth")


def _fresh_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UserError(f"{out} already holds files; pass --force to replace the demo there "
                            f"or choose another --out")
        if not (out / "demo-base.pth").exists():
            raise UserError(f"{out} does not look like a demo folder (no demo-base.pth); "
                            f"choose another --out")
        _remove_demo_files(out)
    out.mkdir(parents=True, exist_ok=True)


def _remove_demo_files(out: Path) -> None:
    from .training.safety import clean_stale_temps, run_files
    for name in DEMO_FILES:
        (out / name).unlink(missing_ok=True)
    run = out / "run"
    for p in run_files(run):
        p.unlink()
    clean_stale_temps(run)
    if run.is_dir() and not any(run.iterdir()):
        run.rmdir()


def run_demo(out="rwkvft-demo", n_layer: int = 2, n_embd: int = 128, epochs: int = 8,
             epoch_steps: int = 25, seed: int = 0, force: bool = False) -> int:
    """The whole demo (module docstring), printing as it goes; `force` replaces an earlier demo
    in `out` (only the files it wrote)."""
    import torch

    from .formats import write_state_dict
    from .config import TrainConfig, validate
    from .models.init import init_state_dict, new_config
    from .training.run import train
    from .data import SAMPLE_JSONL

    t0 = time.perf_counter()
    out = Path(out)
    _fresh_out(out, force)
    base = out / "demo-base.pth"
    print(f"[1/4] initialising a tiny RWKV-7 (L{n_layer} C{n_embd}, vocab 65536) -> {base}")
    write_state_dict(init_state_dict(new_config(n_layer, n_embd), seed=seed, trainable=True), base)
    data = out / "chat.jsonl"
    shutil.copyfile(SAMPLE_JSONL, data)
    print(f"[2/4] sample data: {data} ({sum(1 for _ in open(data, encoding='utf-8'))} conversations)")
    prompts = out / "prompts.txt"
    prompts.write_text(PROMPT.replace("\n", "\\n") + "\n", encoding="utf-8")
    cfg = TrainConfig(load_model=str(base), proj_dir=str(out / "run"), data_file=str(data),
                      data_type="jsonl", dataload="pad", ctx_len=64, micro_bsz=4,
                      epoch_steps=epoch_steps, epoch_count=epochs, epoch_save=1,
                      lr_init=1e-2, lr_final=3e-3, warmup_steps=5, accelerator="cpu",
                      precision="fp32", peft="miss", peft_config='{"r":32}',
                      train_parts=["ln", "time"], merge_output=str(out / "demo-merged.pth"),
                      random_seed=seed, val_split=0.1, sample_prompts=str(prompts),
                      sample_tokens=16)
    validate(cfg)
    print("[3/4] training MiSS r=32 (+ LayerNorms and time-mix vectors) on CPU")
    torch.manual_seed(seed)
    result = train(cfg)
    losses = _epoch_losses(out / "run" / "train_log.txt")
    if losses:
        print("      loss by epoch: " + " -> ".join(f"{x:.2f}" for x in losses))
    _print_epochs(result)
    print(f"[4/4] generating from the merged model {result.merged}")
    print("-" * 60)
    print(PROMPT, end="", flush=True)
    _generate(result.merged, PROMPT, seed)
    print("\n" + "-" * 60)
    print(f"done in {time.perf_counter() - t0:.0f}s. Files:")
    for label, path in (("base model", base), ("training data", data),
                        ("adapter", result.adapters[-1] if result.adapters else None),
                        ("merged model", result.merged),
                        ("training log", out / "run" / "train_log.txt"),
                        ("loss per step", out / "run" / "loss.jsonl"),
                        ("loss plot", out / "run" / "loss.png")):
        print(f"  {label:14s} {path}")
    return 0


def _print_epochs(result) -> None:
    """Validation loss (held-out conversations) and the sample continuation of each epoch."""
    val = [r for r in result.validation]
    if val:
        print("      validation loss by epoch: " + " -> ".join(f"{r['loss']:.2f}" for r in val))
    for name, texts in result.samples:
        print(f"      sample after {name}: {texts[0].strip()[:70]!r}")


def _generate(model_path: Path, prompt: str, seed: int) -> None:
    import sys

    from .generation import generate
    generate(model_path, prompt, max_tokens=40, temperature=0.0, seed=seed, out=sys.stdout)


def _epoch_losses(log_path: Path) -> list[float]:
    losses = []
    if log_path.exists():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            if line.startswith("epoch ") and " loss " in line:
                losses.append(float(line.split(" loss ")[1].split()[0]))
    return losses
