"""rwkvft: parameter-efficient fine-tuning for RWKV language models.

The Python API is what the CLI calls (each `rwkvft <command>` parses its flags and calls one of
these): `load_model`, `set_state`, `generate`, `evaluate`, `train`; `rwkvft.bench.run_bench`,
`rwkvft.demo.run_demo`, `rwkvft.data.prepare.prepare`, `rwkvft.new_model.write_new_model`.
Everything is imported when first called, so `import rwkvft` stays light.
"""
from __future__ import annotations

__version__ = "0.1.0"


def load_model(path, device="cpu", dtype=None, state=None, adapter=None, lora_alpha=None):
    """Load an official RWKV checkpoint (.pth or .safetensors) as a plain nn.Module.

    `dtype` defaults to torch.float32. `model(idx)` returns logits (B, T, V). `state`: a state
    file (see set_state) every sequence called without a state then starts from. `adapter`: an
    adapter file merged in memory (`lora_alpha` for RWKV-PEFT LoRA files that do not record it).
    """
    from .assembly import assemble_model
    return assemble_model(path, adapter=adapter, state=state, lora_alpha=lora_alpha,
                          device=device, dtype=dtype)


def set_state(model, state):
    """Make `model(idx)` (no state passed) start from `state`: a state file (state adapter
    rwkv-N.pth, RWKV Runner / RWKV-PEFT .pth, Ai00 .state) or a dict
    {"blocks.{i}.att.time_state": (H, N, N) [value, key]}; None goes back to zeros.
    Returns the model."""
    from .assembly import set_state as _set_state
    return _set_state(model, state)


def generate(model, prompt: str, **options) -> str:
    """Continue `prompt` (see rwkvft.generation.generate for the options); returns the text."""
    from .generation import generate as _generate
    return _generate(model, prompt, **options)


def evaluate(model, data_file, **options):
    """Loss / perplexity on a data file read as training reads it
    (rwkvft.evaluation.data_eval.evaluate)."""
    from .evaluation.data_eval import evaluate as _evaluate
    return _evaluate(model, data_file, **options)


def train(config=None, **flags):
    """Fine-tune: `config` is a TrainConfig, or give the `rwkvft train` flags as keywords
    (e.g. train(load_model="base.pth", data_file="d.jsonl", peft="lora")). Returns a TrainResult.
    --eval_tasks' scorer is handed to the recipe here, from the layer above it."""
    from .config import TrainConfig, config_from_values, validate
    from .evaluation.during_training import task_scorer
    from .training.run import train as _train
    if config is None:
        config = config_from_values(flags)
    elif flags:
        raise TypeError("give a TrainConfig or flag keywords, not both")
    elif isinstance(config, TrainConfig):
        validate(config)
    return _train(config, save_hooks=[task_scorer])


__all__ = ["load_model", "set_state", "generate", "evaluate", "train", "__version__"]
