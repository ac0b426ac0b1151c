"""MiSS (Matrix Shard Sharing, formerly Bone/DiSHA): maths and the adapted Linear.

Spec: the MiSS paper (Bone/DiSHA). W is (m=out, n=in), r is the shard width.
- default: D (r, m), zero init. y = W x + S(x) D with S(x) = sum of the width-r chunks of x
  zero-padded to a multiple of r (dropout on the padded x). Dense form: dW[o, c] = D[c mod r, o].
- mini:    D_mini (r, mini_r) tiled along the output axis m / mini_r times, then as default.
- bat:     B (m/r, r, r) (HF peft: indexed by output-row block i);
           W'_ij = W_ij + W_ij B_i + B_i, with W_ij the r x r block (row block i, column block j).
- bat_in:  D (n/r, r, r) (RWKV-PEFT's BatLinear: indexed by input-column block j);
           W'_ij = W_ij + W_ij D_j + D_j.
Bat modes ignore dropout: the forward materialises W' (the update depends on W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .base import AdaptedLinear, fp32_region, new_fp32
from .config import AdapterConfig, dropout, positive_int
from .method import LinearMethod

MODES = ("default", "bat", "bat_in", "mini")


# ---------------------------------------------------------------- pure maths (fp32 tensors)
def pad_to_shards(x: torch.Tensor, r: int) -> torch.Tensor:
    pad = (-x.shape[-1]) % r
    return F.pad(x, (0, pad)) if pad else x


def shard_sum(x_padded: torch.Tensor, r: int) -> torch.Tensor:
    """(..., g*r) -> (..., r): sum of the contiguous width-r chunks."""
    return x_padded.unflatten(-1, (-1, r)).sum(-2)


def effective_d(t: torch.Tensor, mode: str, out_features: int) -> torch.Tensor:
    """The (r, m) matrix D of default/mini modes (mini tiles its (r, mini_r) along m)."""
    if mode == "mini":
        return t.repeat(1, out_features // t.shape[1])
    return t


def miss_delta(d: torch.Tensor, in_features: int) -> torch.Tensor:
    """Dense update dW (m, n) of default/mini: D^T tiled across the input, last tile truncated."""
    r = d.shape[0]
    tiles = -(-in_features // r)
    return d.t().repeat(1, tiles)[:, :in_features]


def _block_b(t: torch.Tensor, mode: str) -> torch.Tensor:
    """Broadcast the bat tensor to W's block layout (i, a, j, c)."""
    if mode == "bat":          # B[i, a, c] shared over column blocks j
        return t[:, :, None, :]
    return t.permute(1, 0, 2)[None]   # bat_in: D[j, a, c] shared over row blocks i


def bat_delta(w: torch.Tensor, t: torch.Tensor, mode: str) -> torch.Tensor:
    """dW(W) for bat / bat_in, blockwise W_ij T + T; w (m, n) and t in fp32."""
    m, n = w.shape
    r = t.shape[-1]
    wv = w.reshape(m // r, r, n // r, r)                    # [i, a, j, b]
    spec = "iajb,ibc->iajc" if mode == "bat" else "iajb,jbc->iajc"
    return (torch.einsum(spec, wv, t) + _block_b(t, mode)).reshape(m, n)


def bat_unmerge(w_merged: torch.Tensor, t: torch.Tensor, mode: str) -> torch.Tensor:
    """Invert bat: W_ij = (W'_ij - T)(I + T)^-1 (T per block); float64 solve for accuracy."""
    m, n = w_merged.shape
    r = t.shape[-1]
    t64 = t.double()
    y = (w_merged.double().reshape(m // r, r, n // r, r) - _block_b(t64, mode))
    y = y.permute(0, 2, 1, 3)                               # [i, j, a, c]
    eye = torch.eye(r, dtype=torch.float64, device=t.device)
    mat = (eye + t64)[:, None] if mode == "bat" else (eye + t64)[None]   # (i,1,r,r) / (1,j,r,r)
    x = torch.linalg.solve(mat, y, left=False)              # solves X (I + T) = Y
    return x.permute(0, 2, 1, 3).reshape(m, n).to(w_merged.dtype)


def merge_weight(w: torch.Tensor, t: torch.Tensor, mode: str, sign: int = 1) -> torch.Tensor:
    """Merged (sign=+1) or unmerged (sign=-1) weight, fp32 in and out."""
    if mode in ("bat", "bat_in"):
        return w + bat_delta(w, t, mode) if sign > 0 else bat_unmerge(w, t, mode)
    return w + sign * miss_delta(effective_d(t, mode, w.shape[0]), w.shape[1])


def adapter_shape(mode: str, r: int, out_f: int, in_f: int, mini_r: int = 0) -> tuple:
    return {"default": (r, out_f), "mini": (r, mini_r),
            "bat": (out_f // r, r, r), "bat_in": (in_f // r, r, r)}[mode]


def check_sizes(name: str, mode: str, r: int, out_f: int, in_f: int, mini_r: int = 0) -> None:
    """Size checks that need the layer; UserError names the layer."""
    if r > in_f:
        raise UserError(f"MiSS r={r} is larger than in_features={in_f} of {name}; use r <= {in_f}")
    if mode in ("bat", "bat_in") and (in_f % r or out_f % r):
        raise UserError(f"MiSS {mode} needs in and out features divisible by r, but {name} is "
                        f"({out_f} out, {in_f} in) and r={r}; choose r dividing both or mode default")
    if mode == "mini" and out_f % mini_r:
        raise UserError(f"MiSS mini needs out_features divisible by mini_r, but {name} has "
                        f"out_features={out_f} and mini_r={mini_r}; choose a divisor of {out_f}")


# ---------------------------------------------------------------- module
class MissLinear(AdaptedLinear):
    adapter_param_names = ("miss",)

    def __init__(self, base: nn.Linear, r: int, mode: str = "default", mini_r: int = 0,
                 dropout: float = 0.0):
        super().__init__(base)
        self.r, self.mode, self.mini_r = r, mode, mini_r
        shape = adapter_shape(mode, r, self.out_features, self.in_features, mini_r)
        self.miss = nn.Parameter(new_fp32(shape, self.weight))   # zero init: identity at start
        self.dropout = nn.Dropout(dropout) if dropout > 0 and mode not in ("bat", "bat_in") else nn.Identity()

    def adapter_forward(self, x32: torch.Tensor) -> torch.Tensor:
        s = shard_sum(self.dropout(pad_to_shards(x32, self.r)), self.r)
        return s @ effective_d(self.miss.float(), self.mode, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode not in ("bat", "bat_in") or self.reference_mode:
            return super().forward(x)
        # Bat: the update depends on W, so materialise W' (from the dequantized base) in fp32.
        with fp32_region(x):
            w = self.dequantized_weight().float()
            w = w + bat_delta(w, self.miss.float(), self.mode)
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), w, bias).to(x.dtype)

    def merged_weight(self, sign: int = 1) -> torch.Tensor:
        return apply_delta(self.dequantized_weight().float(), {"miss": self.miss.detach()},
                           {"mode": self.mode}, sign)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, mode={self.mode}"


# ---------------------------------------------------------------- the method record
def _mode(d: dict) -> str:
    if "init_weights" in d and "mode" in d:
        raise UserError("--peft_config: give either mode or init_weights (HF spelling), not both")
    if "init_weights" in d:
        iw = d["init_weights"]
        mode = {True: "default", "bat": "bat", "mini": "mini"}.get(iw) if isinstance(iw, (bool, str)) else None
        if mode is None:
            raise UserError(f"--peft_config: init_weights must be true, \"bat\" or \"mini\", got {iw!r} "
                            f"(random init is for tests only)")
        return mode
    mode = d.get("mode", "default")
    mode = "default" if mode == "bone" else mode
    if mode not in MODES:
        raise UserError(f"--peft_config: unknown MiSS mode {mode!r}; use one of {', '.join(MODES)}")
    return mode


def parse_options(d: dict) -> dict:
    mode = _mode(d)
    if "mini_r" in d and mode != "mini":
        raise UserError("--peft_config: mini_r is only used with \"mode\": \"mini\"; add it or drop mini_r")
    return {"mode": mode, "mini_r": positive_int(d, "mini_r", 1) if mode == "mini" else 0,
            "dropout": dropout(d, ("dropout", "miss_dropout"))}


def make_layer(linear: nn.Linear, name: str, cfg: AdapterConfig) -> MissLinear:
    check_sizes(name, cfg.mode, cfg.r, linear.out_features, linear.in_features, cfg.mini_r)
    return MissLinear(linear, cfg.r, cfg.mode, cfg.mini_r, cfg.dropout)


def fits(parts: dict, out_f: int, in_f: int, config: dict) -> bool:
    t, mode = parts["miss"], config.get("mode", "default")
    if mode in ("default", "mini"):
        ok_cols = t.shape[1] == out_f if mode == "default" else out_f % t.shape[1] == 0
        return t.dim() == 2 and ok_cols and t.shape[0] <= in_f
    r = t.shape[-1]
    blocks = out_f // r if mode == "bat" else in_f // r
    return t.dim() == 3 and not (in_f % r or out_f % r) and tuple(t.shape) == (blocks, r, r)


def apply_delta(w: torch.Tensor, parts: dict, config: dict, sign: int = 1) -> torch.Tensor:
    """Merged (sign +1) / unmerged (-1) fp32 weight; the layer and adapters.merge share it."""
    return merge_weight(w, parts["miss"].float(), config.get("mode", "default"), sign)


def label(config: dict) -> str:
    return f"miss {config.get('mode', 'default')}"


def shard_tiling(r: int, in_features: int) -> torch.Tensor:
    """E (r, in) with E[c, i] = 1 where i % r == c: MiSS default dW = D^T E exactly
    (every width-r input block, the short last one included, sees the same D)."""
    cols = torch.arange(in_features)
    e = torch.zeros(r, in_features)
    e[cols % r, cols] = 1.0
    return e


def low_rank(parts: dict, config: dict, weight: torch.Tensor):
    """default / mini: dW = D^T E exactly (scale 1); bat modes depend on W: refused."""
    mode = config.get("mode", "default")
    if mode in ("bat", "bat_in"):
        raise UserError(f"MiSS {mode} adds W-dependent blocks (W_ij T + T), which no low-rank "
                        f"file can express; write the merged model instead: "
                        f"rwkvft merge --format st (Ai00) or --format pth")
    d = effective_d(parts["miss"].float(), mode, weight.shape[0])
    return d.t(), shard_tiling(d.shape[0], weight.shape[1]), 1.0


_PEFT_INIT = {"default": True, "bat": "bat", "mini": "mini"}


def hf_peft(groups: dict, config: dict, base_sd: dict):
    """HF peft's MissConfig holds default / bat / mini as they are (`miss_block`)."""
    mode = config.get("mode", "default")
    if mode not in _PEFT_INIT:
        raise UserError("MiSS bat_in (RWKV-PEFT's input-block bat) has no HF peft equivalent (peft's "
                        "bat blocks by output rows); export the merged model with --format hf")
    tensors = {prefix: {"miss_block": parts["miss"]} for prefix, parts in groups.items()}
    return tensors, {"peft_type": "MISS", "r": int(config["r"]),
                     "miss_dropout": float(config.get("dropout", 0.0)),
                     "mini_r": int(config.get("mini_r") or 1), "init_weights": _PEFT_INIT[mode]}


METHOD = LinearMethod(
    name="miss", aliases=("disha", "bone"), default_r=64,
    keys={"mode": "default", "mini_r": 1, "dropout": 0.0, "miss_dropout": 0.0, "init_weights": True},
    options=parse_options, make_layer=make_layer, suffixes=("miss",), fits=fits,
    apply_delta=apply_delta, label=label, low_rank=low_rank,
    low_rank_kind="exact (default, mini; bat: cannot)", hf_peft=hf_peft,
    summary="MiSS (Bone/DiSHA): shared shards D (r, out); modes default, bat, bat_in, mini",
).method()
