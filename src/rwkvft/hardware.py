"""Where a model runs and in what precision: the one reading of --accelerator / --device and
--precision, for train, bench, eval and generate."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import UserError

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
# our precision names -> Lightning's
LIGHTNING_PRECISION = {"fp32": "32-true", "tf32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


@dataclass(frozen=True)
class Hardware:
    accelerator: str        # "cpu" | "gpu" (Lightning's names)
    device: torch.device
    precision: str          # fp32 | tf32 | fp16 | bf16

    @property
    def on_gpu(self) -> bool:
        return self.accelerator == "gpu"

    @property
    def lightning_precision(self) -> str:
        return LIGHTNING_PRECISION[self.precision]

    @property
    def autocast_bf16(self) -> bool:
        return self.precision == "bf16"


def resolve_device(where: str = "auto", precision: str = "", flag: str = "--accelerator",
                   precisions: tuple = PRECISIONS) -> Hardware:
    """`where`: auto (a GPU when one is visible), cpu, gpu, cuda or cuda:N; `precision` "" =
    bf16 on a GPU, fp32 on CPU. `flag` names the option in errors. tf32 turns on TF32 matmuls
    (and any other precision turns them off), so this is the one place that sets them."""
    device = _device(where, flag)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    precision = precision or ("bf16" if accelerator == "gpu" else "fp32")
    if precision not in precisions:
        raise UserError(f"--precision {precision!r} is not one of {', '.join(precisions)}")
    if precision == "fp16" and accelerator == "cpu":
        raise UserError("--precision fp16 needs a GPU; on CPU use fp32 (or bf16, which is slow on CPU)")
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    return Hardware(accelerator, device, precision)


def _device(where: str, flag: str) -> torch.device:
    text = {"auto": "cuda" if torch.cuda.is_available() else "cpu", "gpu": "cuda"}.get(where, where)
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"{flag} {where!r} is not one of auto, cpu, gpu (or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{flag} {where} but no CUDA GPU is visible; use {flag} cpu")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device
