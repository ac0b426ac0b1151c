"""`--quant int8|nf4`: the frozen base weights of adapted layers stored quantized (bitsandbytes).

Recipe (the GPU playbook's quantized-base recipe): after `inject`, each adapted layer's frozen (out, in) weight
is quantized with bitsandbytes' functional API (nf4: `quantize_4bit`, blocksize 64, double
quant; int8: weight-only `quantize_blockwise`, blocksize 256) and the float weight is dropped,
so only the packed bytes stay in memory. The forward dequantizes on the fly and runs F.linear
in the activation dtype (activations are never quantized, unlike LLM.int8); the backward
dequantizes again for g @ W. Nothing is saved for the base path: no input activation, no weight.

Only `dequantized_weight()` / `base_forward()` change (adapters/base.py), so MiSS (default,
mini, and bat, which rebuilds W' from the dequantized W each step), LoRA and PiSSA (whose
residual W - B0 A0 is what gets quantized) all work unchanged; adapters stay fp32.

State dict: a quantized layer has no `<prefix>.weight` entry (the base is reloaded from the
original file, never saved); loading a `weight` requantizes it. Adapter files, fingerprints
and merges use the original bf16 base file, as without --quant.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import AdaptedLinear

QUANT_MODES = ("int8", "nf4")
NF4_BLOCKSIZE = 64      # bitsandbytes' default; 0.5 + ~0.016 bytes per weight with double quant
INT8_BLOCKSIZE = 256    # 1 + 4/256 bytes per weight


def bitsandbytes_functional():
    """bitsandbytes.functional, or a UserError naming the extra to install."""
    try:
        import bitsandbytes.functional as bnbf
    except ImportError:
        raise UserError("--quant int8/nf4 needs bitsandbytes, which is not installed: "
                        "pip install 'rwkvft[quant]' (or use --quant none)") from None
    return bnbf


class _QuantLinearFn(torch.autograd.Function):
    """y = x W^T with W dequantized in forward and again in backward (nothing saved).

    Autocast is resolved by hand: the compute dtype is autocast's when it is on, else x's;
    the backward uses the same dtype and returns the gradient in x's dtype.
    """

    @staticmethod
    def forward(ctx, x, layer):
        dev = x.device.type
        dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        ctx.layer, ctx.dt, ctx.x_dtype = layer, dt, x.dtype
        with torch.autocast(dev, enabled=False):
            return F.linear(x.to(dt), layer.dequantized_weight().to(dt))

    @staticmethod
    def backward(ctx, g):
        w = ctx.layer.dequantized_weight().to(ctx.dt)
        return (g.to(ctx.dt) @ w).to(ctx.x_dtype), None


class QuantizedBase:
    """Mixin placed before an AdaptedLinear subclass: quantized frozen weight, same adapter."""

    quant_mode: str = ""

    def quantize_(self, mode: str, device=None) -> None:
        """Quantize `self.weight` (on `device`, default its own) and drop the float copy."""
        if mode not in QUANT_MODES:
            raise UserError(f"--quant {mode!r} is not one of none, {', '.join(QUANT_MODES)}")
        w = self.weight.detach()
        if device is not None:
            w = w.to(device)
        del self.weight              # the Parameter goes: no float copy of the base remains
        self.quant_mode = mode
        self._store(w)

    def _store(self, w: torch.Tensor) -> None:
        bnbf = bitsandbytes_functional()
        w = w.detach().contiguous()
        if not w.is_floating_point() or w.dtype == torch.float64:
            w = w.float()
        if self.quant_mode == "nf4":
            packed, state = bnbf.quantize_4bit(w, blocksize=NF4_BLOCKSIZE, compress_statistics=True,
                                               quant_type="nf4")
        else:
            packed, state = bnbf.quantize_blockwise(w, blocksize=INT8_BLOCKSIZE)
        # non-persistent: module.to() moves it, state_dict() leaves it out
        self.register_buffer("qweight", packed, persistent=False)
        self.quant_state = state                 # a plain attribute: _apply moves it
        self.weight_shape = tuple(w.shape)
        self.weight_dtype = w.dtype

    def dequantized_weight(self) -> torch.Tensor:
        bnbf = bitsandbytes_functional()
        if self.quant_mode == "nf4":
            w = bnbf.dequantize_4bit(self.qweight, self.quant_state)
        else:
            w = bnbf.dequantize_blockwise(self.qweight, self.quant_state)
        return w.reshape(self.weight_shape)

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _QuantLinearFn.apply(x, self)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        if self.quant_mode and self.quant_state.absmax.device != self.qweight.device:
            self.quant_state.to(self.qweight.device)      # QuantState is not a tensor: move it here
        return out

    def quantized_bytes(self) -> int:
        s = self.quant_state
        n = self.qweight.numel() * self.qweight.element_size() + s.absmax.numel() * s.absmax.element_size()
        if getattr(s, "nested", False):
            n += s.state2.absmax.numel() * s.state2.absmax.element_size()
        return n

    def set_frozen_weight(self, w: torch.Tensor) -> None:
        # a new frozen weight (PiSSA's residual for loaded factors) is requantized
        self._store(w.to(self.weight_dtype))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        w = state_dict.pop(prefix + "weight", None)
        if w is not None:   # a base file loaded into a quantized model: requantize that weight
            self._store(w.to(self.qweight.device, self.weight_dtype))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, quant={self.quant_mode}"


_CLASSES: dict = {}


def _quantized_class(cls):
    """QuantizedBase + cls, one class per adapter class (cached so isinstance checks agree)."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Quantized{cls.__name__}", (QuantizedBase, cls), {})
    return _CLASSES[cls]


def quantize_base(model: torch.nn.Module, mode: str, device=None) -> dict:
    """Quantize the frozen weight of every adapted layer of an injected model, in place.

    `device`: where to quantize (bitsandbytes' CPU quantizer is slow: pass the GPU when training
    on one). Returns {"layers": n, "float_bytes": before, "quant_bytes": after}.
    """
    if mode == "none":
        return {"layers": 0, "float_bytes": 0, "quant_bytes": 0}
    if mode not in QUANT_MODES:
        raise UserError(f"--quant {mode!r} is not one of none, {', '.join(QUANT_MODES)}")
    bitsandbytes_functional()
    if not any(isinstance(m, AdaptedLinear) for m in model.modules()) and \
            any(getattr(m, "time_state", None) is not None for m in model.modules()):
        from .state import wrap_frozen_linears   # a state run: wrap the frozen targets
        wrap_frozen_linears(model)
    layers = [m for m in model.modules() if isinstance(m, AdaptedLinear)]
    if not layers:
        raise UserError("--quant needs adapted layers (inject an adapter first); "
                        "only the frozen weights under adapters are quantized")
    before = after = 0
    for m in layers:
        if isinstance(m, QuantizedBase):
            raise UserError("this model's base is already quantized; load a fresh base model")
        before += m.weight.numel() * m.weight.element_size()
        m.__class__ = _quantized_class(type(m))
        m.quantize_(mode, device)
        after += m.quantized_bytes()
        if device is not None and torch.device(device).type == "cuda":
            torch.cuda.empty_cache()   # hand each layer's float copy back before the next
    return {"layers": len(layers), "float_bytes": before, "quant_bytes": after}
