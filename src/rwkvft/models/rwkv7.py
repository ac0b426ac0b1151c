"""RWKV-7 ("x070", Goose) as a plain nn.Module (the RWKV-7 architecture spec).

Parameter names and shapes are the checkpoint's own, so `load_state_dict(official_sd)` is
strict. Linear projections are only ever called, never read, so adapters and quantized
layers can stand in for them. WKV inputs decay in fp32 and the WKV state is always fp32; the
rest runs in the module's dtype.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import UserError
from ..kernels import wkv7
from ..kernels.reference import compute_dtype
from .schema import ModelConfig

# decay d = exp(-e^-0.5 * sigmoid(z)) lies in (0.545, 1): log d = -e^-0.5 * sigmoid(z)
_DECAY_SCALE = math.exp(-0.5)
LN_X_EPS = 64e-5  # 1e-5 * head_size_divisor**2 with divisor 8, as the official models use


def _vector(C: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(1, 1, C))


def _shifted(x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
    """x_{t-1} for every t: the carried previous token (or zeros) at t = 0."""
    first = x.new_zeros(x.shape[0], 1, x.shape[2]) if prev is None else prev.unsqueeze(1).to(x.dtype)
    return torch.cat([first, x[:, :-1]], dim=1)


def initial_wkv(att: nn.Module, wkv_state, batch: int):
    """The WKV state a sequence starts from: the one passed in, else the att module's
    `time_state` (H,N,N) fp32 [value,key] (state tuning, or a state baked into the file),
    expanded over the batch, else None (zeros)."""
    if wkv_state is None and att.time_state is not None:
        ts = att.time_state
        return ts.to(compute_dtype(ts)).expand(batch, *ts.shape)
    return wkv_state


class TimeMix(nn.Module):
    """Attention part: token-shift mixes, low-rank decay / in-context rate / value gate, WKV."""

    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
        self.layer_id, self.n_head, self.head_size = layer_id, H, N
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            setattr(self, name, _vector(C))
        self.w0 = _vector(C)
        self.w1 = nn.Parameter(torch.zeros(C, cfg.d_decay))
        self.w2 = nn.Parameter(torch.zeros(cfg.d_decay, C))
        self.a0 = _vector(C)
        self.a1 = nn.Parameter(torch.zeros(C, cfg.d_aaa))
        self.a2 = nn.Parameter(torch.zeros(cfg.d_aaa, C))
        # layer 0 never uses v0/v1/v2; some official files carry them anyway (cfg.layer0_v)
        self.has_v = layer_id > 0 or cfg.layer0_v
        if self.has_v:
            self.v0 = _vector(C)
            self.v1 = nn.Parameter(torch.zeros(C, cfg.d_mv))
            self.v2 = nn.Parameter(torch.zeros(cfg.d_mv, C))
        self.g1 = nn.Parameter(torch.zeros(C, cfg.d_gate))
        self.g2 = nn.Parameter(torch.zeros(cfg.d_gate, C))
        self.k_k = _vector(C)
        self.k_a = _vector(C)
        self.r_k = nn.Parameter(torch.zeros(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=LN_X_EPS)
        # initial WKV state, None = zeros; set by state tuning (adapters.state) or a baked file
        self.register_parameter("time_state", None)

    def forward(self, x, v_first, shift, wkv_state, op: str):
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        xx = _shifted(x, shift) - x
        r = self.receptance(x + xx * self.x_r)
        k = self.key(x + xx * self.x_k)
        xv = x + xx * self.x_v
        v = self.value(xv)
        xw, xa, xg = x + xx * self.x_w, x + xx * self.x_a, x + xx * self.x_g
        # decay from an fp32 z, as the official kernels and the pip package do
        z = self.w0.float() + (torch.tanh(xw @ self.w1) @ self.w2).float()
        log_w = -_DECAY_SCALE * torch.sigmoid(z)
        eta = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        if self.layer_id == 0:
            v_first = v
        else:  # value residual: lerp towards layer 0's value
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        # kappa from the unscaled key; the k_a-scaled key goes to WKV and the bonus
        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1, p=2.0)
        k = k * (1 + (eta - 1) * self.k_a)
        heads = (B, T, H, N)
        wkv_state = initial_wkv(self, wkv_state, B)
        y, wkv_state = wkv7(r.view(heads), log_w.view(heads), k.view(heads), v.view(heads),
                            -kk, kk * eta.view(heads), state=wkv_state, op=op)
        y = self._group_norm(y.reshape(B * T, C)).view(B, T, C)
        bonus = (r * k * self.r_k.view(1, 1, C)).view(heads).sum(-1, keepdim=True) * v.view(heads)
        out = self.output((y + bonus.view(B, T, C)) * g)
        return out, v_first, x[:, -1], wkv_state

    def _group_norm(self, y):
        # per-head normalisation in fp32 (bf16 variance over 64 channels is too coarse)
        w, b = self.ln_x.weight.float(), self.ln_x.bias.float()
        return F.group_norm(y.float(), self.n_head, w, b, self.ln_x.eps).to(y.dtype)


class ChannelMix(nn.Module):
    """FFN: token shift, squared ReLU, 4C hidden."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.x_k = _vector(cfg.n_embd)
        self.key = nn.Linear(cfg.n_embd, cfg.dim_ffn, bias=False)
        self.value = nn.Linear(cfg.dim_ffn, cfg.n_embd, bias=False)

    def forward(self, x, shift):
        xx = _shifted(x, shift) - x
        k = torch.relu(self.key(x + xx * self.x_k)) ** 2
        return self.value(k), x[:, -1]


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.layer_id = layer_id
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(cfg.n_embd)
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.att = self.make_att(cfg, layer_id)
        self.ffn = self.make_ffn(cfg)

    # RWKV-6/5 blocks share the LayerNorm skeleton and swap in their own mixers
    @staticmethod
    def make_att(cfg: ModelConfig, layer_id: int) -> nn.Module:
        return TimeMix(cfg, layer_id)

    @staticmethod
    def make_ffn(cfg: ModelConfig) -> nn.Module:
        return ChannelMix(cfg)

    def forward(self, x, v_first, state, op: str):
        att_shift, wkv_state, ffn_shift = (None, None, None) if state is None else state
        if self.layer_id == 0:
            x = self.ln0(x)
        dx, v_first, att_shift, wkv_state = self.att(self.ln1(x), v_first, att_shift, wkv_state, op)
        x = x + dx
        dx, ffn_shift = self.ffn(self.ln2(x), ffn_shift)
        return x + dx, v_first, (att_shift, wkv_state, ffn_shift)


class RWKV7(nn.Module):
    """model(idx) -> logits (B,T,V); model(idx, state, return_state=True) -> (logits, state)."""

    block_class = Block  # RWKV-6/5 reuse this skeleton with their own block

    def __init__(self, cfg: ModelConfig, op: str = "chunked", grad_cp: bool = False):
        super().__init__()
        self.config = cfg
        self.op, self.grad_cp = "chunked", False
        self.set_runtime(op=op, grad_cp=grad_cp)
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(self.block_class(cfg, i) for i in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)

    def set_runtime(self, op: str | None = None, grad_cp: bool | None = None) -> None:
        """How the forward runs (not what it computes): the WKV op name (see rwkvft.kernels)
        and activation checkpointing per block while training. None keeps the current value."""
        if op is not None:
            self.op = str(op)
        if grad_cp is not None:
            self.grad_cp = bool(grad_cp)

    def init_state(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Zero state: per layer (att_shift (B,C), wkv (B,H,N,N) fp32 [value,key], ffn_shift (B,C))."""
        cfg, ref = self.config, self.ln_out.weight
        C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
        return [(ref.new_zeros(batch_size, C),
                 torch.zeros(batch_size, H, N, N, device=ref.device, dtype=torch.float32),
                 ref.new_zeros(batch_size, C)) for _ in range(cfg.n_layer)]

    def forward_features(self, idx: torch.Tensor, state=None):
        """ln_out output (B,T,C) and the state after the last token."""
        self._check_inputs(idx, state)
        x = self.emb(idx)
        v_first, new_state = None, []
        for i, block in enumerate(self.blocks):
            s = None if state is None else state[i]
            if self.grad_cp and self.training and torch.is_grad_enabled():
                x, v_first, s = checkpoint(block, x, v_first, s, self.op, use_reentrant=False)
            else:
                x, v_first, s = block(x, v_first, s, self.op)
            new_state.append(s)
        return self.ln_out(x), new_state

    def forward(self, idx: torch.Tensor, state=None, return_state: bool = False):
        h, new_state = self.forward_features(idx, state)
        logits = self.head(h)
        return (logits, new_state) if return_state else logits

    def _check_inputs(self, idx, state) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.shape[1] == 0 \
                or idx.dtype not in (torch.long, torch.int32):
            shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise UserError(f"model input must be a non-empty (batch, time) LongTensor of token ids, "
                            f"got {shape}; use idx.view(1, -1) for a single sequence")
        if state is None:
            return
        if len(state) != self.config.n_layer:
            raise UserError(f"state has {len(state)} layers but the model has {self.config.n_layer}; "
                            f"pass the state this model returned (or model.init_state(batch))")
        if state[0][1].shape[0] != idx.shape[0]:
            raise UserError(f"state is for batch size {state[0][1].shape[0]} but the input has "
                            f"{idx.shape[0]} sequences; use model.init_state({idx.shape[0]})")
