"""RWKV-6 ("x060", Finch) and RWKV-5.2 ("x052", Eagle) as plain nn.Modules (the RWKV-6/5 architecture spec).

Both share the WKV6 recurrence (per-channel decay, bonus u = `time_faaaa`), the gated GroupNorm
output and the receptance-gated channel mix; they differ in how a token is mixed with the
previous one and where the decay comes from:
  x060: data-dependent mixes (time_maa_* + a low-rank tanh MLP) and a data-dependent decay
        w_ll = time_decay + tanh(x_w @ time_decay_w1) @ time_decay_w2;
  x052: static lerps (time_mix_*) and a static per-head decay time_decay (H,N).
The decay is d = exp(-exp(w_ll)): the WKV op gets log d = -exp(w_ll) in fp32, which has no
lower bound (the chunked op is stable for any log d <= 0).

Parameter names and shapes are the checkpoint's own (strict load). Linear projections are only
called, never read, so adapters and quantized layers can stand in for them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..kernels import wkv6
from .schema import ModelConfig
from .rwkv7 import LN_X_EPS, RWKV7, Block, _shifted, _vector, initial_wkv

# order of the five data-dependent mixes in time_maa_w1 / time_maa_w2
_MAA_ORDER = ("w", "k", "v", "r", "g")


class _TimeMixBase(nn.Module):
    """Projections, WKV6 and the gated GroupNorm output shared by x060 and x052."""

    def _projections(self, C: int, H: int) -> None:
        # registered after the version's own parameters: the official key order
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.gate = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=LN_X_EPS)
        # initial WKV state, None = zeros; set by state tuning (adapters.state) or a baked file
        self.register_parameter("time_state", None)

    def _wkv_out(self, xr, xk, xv, xg, log_w, wkv_state, op: str):
        B, T, C = xr.shape
        heads = (B, T, self.n_head, self.head_size)
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        g = F.silu(self.gate(xg))
        log_w = log_w.expand(heads).contiguous()  # x052's static decay comes as (1,1,H,N)
        wkv_state = initial_wkv(self, wkv_state, B)
        y, wkv_state = wkv6(r.view(heads), log_w, k.view(heads), v.view(heads), self.time_faaaa,
                            state=wkv_state, op=op)
        y = self._group_norm(y.reshape(B * T, C)).view(B, T, C)
        return self.output(y * g), wkv_state

    def _group_norm(self, y):
        # per-head normalisation in fp32 (bf16 variance over 64 channels is too coarse)
        w, b = self.ln_x.weight.float(), self.ln_x.bias.float()
        return F.group_norm(y.float(), self.n_head, w, b, self.ln_x.eps).to(y.dtype)


class TimeMix6(_TimeMixBase):
    """x060 attention: data-dependent token shift and decay."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
        self.n_head, self.head_size, self.d_mix = H, N, cfg.d_mix
        self.time_maa_x = _vector(C)
        for name in _MAA_ORDER:
            setattr(self, f"time_maa_{name}", _vector(C))
        self.time_maa_w1 = nn.Parameter(torch.zeros(C, 5 * cfg.d_mix))
        self.time_maa_w2 = nn.Parameter(torch.zeros(5, cfg.d_mix, C))
        self.time_decay = _vector(C)
        self.time_decay_w1 = nn.Parameter(torch.zeros(C, cfg.d_decay))
        self.time_decay_w2 = nn.Parameter(torch.zeros(cfg.d_decay, C))
        self.time_faaaa = nn.Parameter(torch.zeros(H, N))
        self._projections(C, H)

    def forward(self, x, shift, wkv_state, op: str):
        B, T, C = x.shape
        xx = _shifted(x, shift) - x
        # one low-rank MLP gives all five mix offsets: (B,T,5,Dm) x (5,Dm,C) -> (5,B,T,C)
        m = torch.tanh((x + xx * self.time_maa_x) @ self.time_maa_w1).view(B, T, 5, self.d_mix)
        mw, mk, mv, mr, mg = torch.einsum("btfd,fdc->fbtc", m, self.time_maa_w2).unbind(0)
        xw = x + xx * (self.time_maa_w + mw)
        xk = x + xx * (self.time_maa_k + mk)
        xv = x + xx * (self.time_maa_v + mv)
        xr = x + xx * (self.time_maa_r + mr)
        xg = x + xx * (self.time_maa_g + mg)
        # decay exponent in fp32, as the official kernels and the pip package do
        w_ll = self.time_decay.float() + (torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2).float()
        log_w = -torch.exp(w_ll).view(B, T, self.n_head, self.head_size)
        out, wkv_state = self._wkv_out(xr, xk, xv, xg, log_w, wkv_state, op)
        return out, x[:, -1], wkv_state


class TimeMix5(_TimeMixBase):
    """x052 attention: static lerp token shift and a static per-head decay."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
        self.n_head, self.head_size = H, N
        for name in ("k", "v", "r", "g"):
            setattr(self, f"time_mix_{name}", _vector(C))
        self.time_decay = nn.Parameter(torch.zeros(H, N))
        self.time_faaaa = nn.Parameter(torch.zeros(H, N))
        self._projections(C, H)

    def forward(self, x, shift, wkv_state, op: str):
        prev = _shifted(x, shift)
        # RWKV-5 mixes weight the *current* token: x*mix + prev*(1-mix)
        xk, xv, xr, xg = (prev + (x - prev) * mix for mix in
                          (self.time_mix_k, self.time_mix_v, self.time_mix_r, self.time_mix_g))
        log_w = -torch.exp(self.time_decay.float()).view(1, 1, self.n_head, self.head_size)
        out, wkv_state = self._wkv_out(xr, xk, xv, xg, log_w, wkv_state, op)
        return out, x[:, -1], wkv_state


class ChannelMix6(nn.Module):
    """FFN: token shift, squared-ReLU key, receptance gate. x060 names its mixes time_maa_*
    (x + (prev - x)*maa), x052 time_mix_* (x*mix + prev*(1 - mix))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C = cfg.n_embd
        self.v5 = cfg.version == "x052"
        self.mix_names = ("time_mix_k", "time_mix_r") if self.v5 else ("time_maa_k", "time_maa_r")
        for name in self.mix_names:
            setattr(self, name, _vector(C))
        self.key = nn.Linear(C, cfg.dim_ffn, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(cfg.dim_ffn, C, bias=False)

    def forward(self, x, shift):
        prev = _shifted(x, shift)
        mix_k, mix_r = (getattr(self, n) for n in self.mix_names)
        if self.v5:
            xk, xr = prev + (x - prev) * mix_k, prev + (x - prev) * mix_r
        else:
            xk, xr = x + (prev - x) * mix_k, x + (prev - x) * mix_r
        k = torch.relu(self.key(xk)) ** 2
        return torch.sigmoid(self.receptance(xr)) * self.value(k), x[:, -1]


class Block6(Block):
    """RWKV-7's block skeleton (ln0 at layer 0, ln1, ln2) with the x060/x052 mixers; no v_first."""

    @staticmethod
    def make_att(cfg: ModelConfig, layer_id: int) -> nn.Module:
        return TimeMix6(cfg) if cfg.version == "x060" else TimeMix5(cfg)

    @staticmethod
    def make_ffn(cfg: ModelConfig) -> nn.Module:
        return ChannelMix6(cfg)

    def forward(self, x, state, op: str):
        att_shift, wkv_state, ffn_shift = (None, None, None) if state is None else state
        if self.layer_id == 0:
            x = self.ln0(x)
        dx, att_shift, wkv_state = self.att(self.ln1(x), att_shift, wkv_state, op)
        x = x + dx
        dx, ffn_shift = self.ffn(self.ln2(x), ffn_shift)
        return x + dx, (att_shift, wkv_state, ffn_shift)


class RWKV6(RWKV7):
    """x060 or x052 (cfg.version). model(idx) -> logits (B,T,V);
    model(idx, state, return_state=True) -> (logits, state). Same contract as RWKV7, whose
    skeleton (embedding, blocks, ln_out, head, state layout, input checks) it reuses; only the
    blocks and the layer loop (no v_first) differ."""

    block_class = Block6

    def forward_features(self, idx: torch.Tensor, state=None):
        """ln_out output (B,T,C) and the state after the last token."""
        self._check_inputs(idx, state)
        x = self.emb(idx)
        new_state = []
        for i, block in enumerate(self.blocks):
            s = None if state is None else state[i]
            if self.grad_cp and self.training and torch.is_grad_enabled():
                x, s = checkpoint(block, x, s, self.op, use_reentrant=False)
            else:
                x, s = block(x, s, self.op)
            new_state.append(s)
        return self.ln_out(x), new_state
