"""The common wrapper every adapted Linear derives from.

The wrapper replaces an `nn.Linear(bias=False)` child of the model. It keeps the frozen base
weight as its own `weight` parameter, so the model's state_dict key stays `<prefix>.weight`
and an official checkpoint still loads into the adapted model. Adapter tensors live beside
it (`<prefix>.miss`, `<prefix>.lora_A`, ...), created in fp32 so small updates are not lost to
bf16 rounding; the adapter term is computed in fp32 and the output cast back to x's dtype.
`adapter_forward` reads its parameters through `.float()` (free for fp32 ones): DeepSpeed's bf16
engine casts every float parameter, adapters included, to bf16 and keeps the fp32 masters in its
optimizer, so there the adapter maths is still fp32, on the bf16 copy of the masters.

The frozen path goes through `dequantized_weight()` / `base_forward()` only, so a quantized
base (bitsandbytes nf4/int8) can later subclass and override just those two methods.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class AdaptedLinear(nn.Module):
    # Names of this wrapper's trainable adapter parameters (saved in adapter files).
    adapter_param_names: tuple[str, ...] = ()
    # Extra tensors that go into the adapter file but are not trained (PiSSA's A0/B0).
    adapter_extra_names: tuple[str, ...] = ()
    # True inside adapters.reference.layers_in_reference_mode: forward = reference_forward
    reference_mode: bool = False

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.in_features = base.in_features
        self.out_features = base.out_features
        # Share the base storage: wrapping must not copy a multi-GB model.
        self.weight = nn.Parameter(base.weight.detach(), requires_grad=False)
        if base.bias is not None:
            self.bias = nn.Parameter(base.bias.detach(), requires_grad=False)
        else:
            self.register_parameter("bias", None)

    # ---- frozen path (override these two for a quantized base) ----
    def dequantized_weight(self) -> torch.Tensor:
        """The frozen (out, in) weight in a float dtype."""
        return self.weight

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight(), self.bias)

    def set_frozen_weight(self, w: torch.Tensor) -> None:
        """Replace the frozen weight's values (a quantized base requantizes instead)."""
        with torch.no_grad():
            self.weight.copy_(w.to(self.weight.dtype))

    # ---- adapter path (subclasses) ----
    def adapter_forward(self, x32: torch.Tensor) -> torch.Tensor:
        """Adapter term for fp32 input, in fp32 whatever dtype the parameters are in (read
        them as `p.float()`); added to base_forward's output."""
        raise NotImplementedError

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer of the reference policy (preference tuning): the frozen base, adapter off.
        PiSSA overrides it: its frozen base is a residual, its reference the original weight."""
        return self.base_forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reference_mode:
            return self.reference_forward(x)
        y = self.base_forward(x)
        with fp32_region(x):
            return (y.float() + self.adapter_forward(x.float())).to(x.dtype)

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """Everything that goes into the adapter file, keyed by local name."""
        names = self.adapter_param_names + self.adapter_extra_names
        return {n: getattr(self, n) for n in names}

    def load_adapter_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, t in tensors.items():
                getattr(self, n).copy_(t)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # A base checkpoint has no adapter keys; loading it (strict) must keep the adapter as is.
        # Adapter files are loaded through load_adapter_state, which checks every key itself.
        before = len(missing_keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
        adapter_keys = {prefix + n for n in self.adapter_param_names}
        missing_keys[before:] = [k for k in missing_keys[before:] if k not in adapter_keys]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def new_fp32(shape, ref: torch.Tensor) -> torch.Tensor:
    """Zeros in fp32 on `ref`'s device (adapter parameters are always fp32)."""
    return torch.zeros(shape, dtype=torch.float32, device=ref.device)


def fp32_region(x: torch.Tensor):
    """Turn autocast off (bf16-mixed training would run the adapter matmuls in bf16)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()
