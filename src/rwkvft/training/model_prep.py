"""Step 3 of `rwkvft train` (and all of `rwkvft bench`'s set-up): put the PEFT method on the
base model, keep the frozen base in the training precision, quantize it for --quant."""
from __future__ import annotations

import os

import torch

from ..adapters import AdapterConfig, Injected, inject


def prepare_model(model, peft: AdapterConfig, train_parts, precision: str, quant: str = "none",
                  quant_device=None) -> tuple[Injected, str]:
    """Step 3 (shared with bench): inject the PEFT method, keep the frozen base in the training
    precision, quantize it (--quant). Returns (trainable names, a log line for --quant)."""
    trainable = inject_method(model, peft, train_parts)
    cast_frozen(model, precision)
    return trainable, quantize_frozen(model, quant, quant_device)


def inject_method(model, peft: AdapterConfig, train_parts) -> Injected:
    return inject(model, peft, list(train_parts))


def cast_frozen(model, precision: str) -> None:
    """Keep the frozen base in the training precision (no fp32 copy); adapters stay fp32."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    if dtype is None:
        return
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point():
            p.data = p.data.to(dtype)


def quantize_frozen(model, quant: str, device=None) -> str:
    """--quant: quantize the frozen weights under the adapters (on `device`: the GPU when
    training on one, bitsandbytes' CPU quantizer is slow). A log line ('' for --quant none)."""
    if quant == "none":
        return ""
    from ..adapters.quant import quantize_base
    q = quantize_base(model, quant, device)
    return (f"quant: {quant} base weights in {q['layers']} adapted layers, "
            f"{q['float_bytes'] / 2**20:.1f} MiB -> {q['quant_bytes'] / 2**20:.1f} MiB")


def quant_device(acc: str):
    """Where --quant quantizes: this process's GPU when training on one. It runs before
    Trainer.fit, i.e. before Lightning selects the process's GPU, so current_device() would
    still be GPU 0 on every rank: use the local rank Lightning's launcher gives each process."""
    if acc != "gpu":
        return None
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
