"""PiSSA: LoRA whose factors start at the top-r singular triplets of W.

W = U S V^T; A0 = sqrt(S_r) V_r^T (r, in), B0 = U_r sqrt(S_r) (out, r); the frozen base
becomes the residual W - B0 A0 and the scale is 1, so at init the layer equals W (up to
rounding). A0/B0 are kept (non-persistent buffers, saved in the adapter file) because a merge
onto the ORIGINAL base needs them: W_merged = W - B0 A0 + B A.

SVD: exact (torch.linalg.svd) when min(out, in) <= EXACT_SVD_MAX_DIM and svd_niter is not
given; otherwise torch.svd_lowrank with svd_niter (default 4) subspace iterations, which is
randomized: it draws from torch's global RNG, so seed torch for reproducible factors.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from . import lora
from .base import fp32_region
from .config import AdapterConfig, dropout, positive_int
from .lora import LoraLinear, lora_delta
from .method import LinearMethod, peft_lora

# Below this size an exact SVD is cheap on CPU and GPU; above it randomized SVD is much faster.
EXACT_SVD_MAX_DIM = 1024
DEFAULT_SVD_NITER = 4


def pissa_factors(w: torch.Tensor, r: int, svd_niter: int | None = None):
    """(A0, B0) in fp32 from the top-r SVD of w (out, in)."""
    w32 = w.float()
    if svd_niter is None and min(w.shape) <= EXACT_SVD_MAX_DIM:
        u, s, vh = torch.linalg.svd(w32, full_matrices=False)
        u, s, vh = u[:, :r], s[:r], vh[:r]
    else:
        niter = DEFAULT_SVD_NITER if svd_niter is None else svd_niter
        u, s, v = torch.svd_lowrank(w32, q=min(r + 8, min(w.shape)), niter=niter)
        u, s, vh = u[:, :r], s[:r], v[:, :r].t()
    root = s.sqrt()
    return (root[:, None] * vh).contiguous(), (u * root[None, :]).contiguous()


class PissaLinear(LoraLinear):
    adapter_extra_names = ("lora_A0", "lora_B0")

    def __init__(self, base: nn.Linear, r: int, dropout: float = 0.0,
                 svd_niter: int | None = None, name: str = "layer"):
        if r > min(base.in_features, base.out_features):
            raise UserError(f"PiSSA r={r} exceeds min(out, in)={min(base.in_features, base.out_features)} "
                            f"of {name}; use a smaller r")
        super().__init__(base, r, scale=1.0, dropout=dropout)
        a0, b0 = pissa_factors(self.weight, r, svd_niter)
        with torch.no_grad():
            self.lora_A.copy_(a0)
            self.lora_B.copy_(b0)
        # Non-persistent: the model's state_dict keeps exactly the checkpoint keys + A, B.
        self.register_buffer("lora_A0", a0.clone(), persistent=False)
        self.register_buffer("lora_B0", b0.clone(), persistent=False)
        # The residual replaces the base in place (own storage: never write into the caller's W).
        resid = self.weight.float() - b0 @ a0
        self.weight = nn.Parameter(resid.to(self.weight.dtype), requires_grad=False)

    def original_weight(self) -> torch.Tensor:
        """W in fp32, as it was before the residual split."""
        return self.dequantized_weight().float() + self.lora_B0 @ self.lora_A0

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reference policy's layer is the ORIGINAL W = W_res + B0 A0 (not the residual)."""
        with fp32_region(x):
            init = (x.float() @ self.lora_A0.t()) @ self.lora_B0.t()
            return (self.base_forward(x).float() + init).to(x.dtype)

    def load_adapter_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        # New initial factors (from a saved run) change the residual: rebuild it from the
        # original W so that W_res = W - B0 A0 matches the run that trained the adapter.
        if "lora_A0" in tensors or "lora_B0" in tensors:
            w = self.original_weight()
            a0 = tensors.get("lora_A0", self.lora_A0).float()
            b0 = tensors.get("lora_B0", self.lora_B0).float()
            self.set_frozen_weight(w - b0 @ a0)
        super().load_adapter_tensors(tensors)

    def merged_weight(self, sign: int = 1) -> torch.Tensor:
        parts = {"lora_A": self.lora_A.detach(), "lora_B": self.lora_B.detach(),
                 "lora_A0": self.lora_A0, "lora_B0": self.lora_B0}
        return apply_delta(self.original_weight(), parts, {}, sign)


# ---------------------------------------------------------------- the method record
def parse_options(d: dict) -> dict:
    niter = d.get("svd_niter")
    return {"svd_niter": None if niter is None else positive_int(d, "svd_niter", None, 0),
            "dropout": dropout(d, ("lora_dropout", "dropout"))}


def make_layer(linear: nn.Linear, name: str, cfg: AdapterConfig) -> PissaLinear:
    return PissaLinear(linear, cfg.r, cfg.dropout, cfg.svd_niter, name=name)


def fits(parts: dict, out_f: int, in_f: int, config: dict) -> bool:
    a, b = parts["lora_A"], parts["lora_B"]
    return (lora.fits(parts, out_f, in_f, config) and parts["lora_A0"].shape == a.shape
            and parts["lora_B0"].shape == b.shape)


def low_rank(parts: dict, config: dict, weight: torch.Tensor):
    """W - B0 A0 + B A = W + [B, -B0] [A; A0]: an exact rank-2r LoRA with scale 1."""
    up = torch.cat([parts["lora_B"].float(), -parts["lora_B0"].float()], dim=1)
    return up, torch.cat([parts["lora_A"].float(), parts["lora_A0"].float()], dim=0), 1.0


def apply_delta(w: torch.Tensor, parts: dict, config: dict, sign: int = 1) -> torch.Tensor:
    """On the ORIGINAL base: W - B0 A0 + B A (unmerge: W' - B A + B0 A0), fp32."""
    p = {k: v.float() for k, v in parts.items()}
    init = lora_delta(p["lora_A0"], p["lora_B0"], 1.0)
    trained = lora_delta(p["lora_A"], p["lora_B"], 1.0)
    return w - init + trained if sign > 0 else w - trained + init


METHOD = LinearMethod(
    name="pissa", default_r=8,
    keys={"svd_niter": None, "lora_dropout": 0.0, "dropout": 0.0},
    options=parse_options, make_layer=make_layer,
    suffixes=("lora_A", "lora_B", "lora_A0", "lora_B0"), fits=fits, apply_delta=apply_delta,
    low_rank=low_rank, low_rank_kind="exact (rank 2r)", hf_peft=peft_lora(low_rank),
    summary="PiSSA: LoRA whose factors start at the top-r singular triplets of W (scale 1)",
).method()
