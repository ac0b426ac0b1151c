"""State tuning (`--peft state`): a trainable initial WKV state per layer, nothing else.

Each att module gets `time_state` (H, N, N) fp32 in the WKV ops' [value, key] layout, the
`blocks.{i}.att.time_state` tensor RWKV-PEFT, RWKV Runner and the rwkv package use. A sequence
that starts without a state starts from it (models/rwkv7.py `initial_wkv`); token-shift states
stay zero. Every other tensor is frozen (optionally `--train_parts` too). It wraps no Linear:
the registry entry is this module (config keys, what it creates, the adapter-file suffix).

peft_config keys (defaults in brackets):
  init   ["zero"] (RWKV-PEFT's init) or "base": the state the base model reaches after
         `prompt`, so training starts from a prompted model
  prompt text for init "base" (World tokenizer), or prompt_tokens: a list of token ids
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..errors import UserError
from .base import AdaptedLinear
from .config import AdapterConfig
from .method import DEFAULT_TARGETS, PeftMethod, _matches, _set_child
from .reference import Reference

INITS = ("zero", "base")
# AdamW on a state: see README "State tuning" and docs/benchmarks.md for the experiment
DEFAULT_LR = 1e-2


def parse_state_config(d: dict) -> AdapterConfig:
    """--peft_config dict (only known keys: the registry checked) -> AdapterConfig(method="state")
    with options init / prompt_tokens."""
    init = d.get("init", "zero")
    if init not in INITS:
        raise UserError(f"--peft_config: init must be \"zero\" or \"base\", got {init!r}")
    prompt = _prompt_tokens(d)
    if (init == "base") != (prompt is not None):
        raise UserError("--peft_config: init \"base\" needs a \"prompt\" (or \"prompt_tokens\"), "
                        "and a prompt is only used with init \"base\"")
    return AdapterConfig(method="state", r=0, options={"init": init, "prompt_tokens": prompt})


def _prompt_tokens(d: dict) -> list[int] | None:
    if "prompt" in d and "prompt_tokens" in d:
        raise UserError("--peft_config: give prompt or prompt_tokens, not both")
    if "prompt" in d:
        if not isinstance(d["prompt"], str) or not d["prompt"]:
            raise UserError(f"--peft_config: prompt must be a non-empty string, got {d['prompt']!r}")
        from ..data.tokenizer import WorldTokenizer
        return WorldTokenizer().encode(d["prompt"])
    ids = d.get("prompt_tokens")
    if ids is None:
        return None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and not isinstance(i, bool)
                                                         and i >= 0 for i in ids):
        raise UserError(f"--peft_config: prompt_tokens must be a non-empty list of token ids, got {ids!r}")
    return list(ids)


def initial_states(model: nn.Module, cfg) -> dict:
    """{blocks.i.att.time_state: (H,N,N)}: zeros, or the WKV state after cfg.prompt_tokens."""
    from ..models.time_state import time_state_key
    c = model.config
    if cfg.init == "zero":
        return {time_state_key(i): torch.zeros(c.n_head, c.head_size, c.head_size)
                for i in range(c.n_layer)}
    bad = [i for i in cfg.prompt_tokens if i >= c.vocab_size]
    if bad:
        raise UserError(f"--peft_config: prompt token {bad[0]} is outside the model's vocabulary "
                        f"({c.vocab_size}); the prompt needs a World-vocabulary model")
    device = model.ln_out.weight.device
    with torch.no_grad():
        _, state = model.forward_features(torch.tensor([cfg.prompt_tokens], device=device))
    return {time_state_key(i): s[1][0].float().cpu() for i, s in enumerate(state)}


def inject_state(model: nn.Module, cfg: AdapterConfig) -> list[str]:
    """The method's inject (adapters.inject freezes the rest): add the time_state parameters."""
    from ..models.time_state import set_time_state
    if any(b.att.time_state is not None for b in model.blocks):
        raise UserError("this model already has a state; load a fresh base model before injecting again")
    cfg.targets = []
    return set_time_state(model, initial_states(model, cfg), trainable=True)


def reference(model: nn.Module, cfg=None) -> Reference:
    """The reference policy (preference tuning): the same model starting from the states it had
    when this was called (zeros for init "zero", the prompted state for "base"), i.e. before
    training. The trained parameters are swapped out, never written: writing them in place would
    invalidate the policy forward's autograd graph (and the optimizer keeps its hold on them)."""
    start = [nn.Parameter(b.att.time_state.detach().clone(), requires_grad=False) for b in model.blocks]

    @contextlib.contextmanager
    def active():
        atts = [b.att for b in model.blocks]
        trained = [a._parameters["time_state"] for a in atts]
        try:
            for a, s in zip(atts, start):
                a._parameters["time_state"] = s if s.device == trained[0].device else \
                    nn.Parameter(s.detach().to(trained[0].device), requires_grad=False)
            yield
        finally:
            for a, t in zip(atts, trained):
                a._parameters["time_state"] = t

    return Reference(model, active, is_base=getattr(cfg, "init", "zero") == "zero")


class FrozenLinear(AdaptedLinear):
    """A frozen Linear with no adapter, so --quant can store the base of a state-tuned model
    quantized (adapters.quant quantizes AdaptedLinear bases)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_forward(x)


def wrap_frozen_linears(model: nn.Module) -> int:
    """Put the method's default target Linears (MiSS's targets) in FrozenLinear; returns how many."""
    wanted = DEFAULT_TARGETS[model.config.version]
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear and n != "head"
             and any(_matches(n, t) for t in wanted)]
    for n in names:
        _set_child(model, n, FrozenLinear(model.get_submodule(n)))
    return len(names)


# ---------------------------------------------------------------- interop
def merge_state_adapter(base_sd: dict, adapter_sd: dict, config: dict, merge_rest) -> dict:
    """Base + state adapter -> the base (with any train_parts merged by `merge_rest`) plus the
    time_state tensors in fp32, as RWKV-PEFT's merge_state writes them."""
    from ..models.schema import infer_config
    from ..models.time_state import check_time_states, is_time_state_key
    states = {k: v for k, v in adapter_sd.items() if is_time_state_key(k)}
    rest = {k: v for k, v in adapter_sd.items() if k not in states}
    check_time_states(states, infer_config(base_sd), "the adapter")
    merged = merge_rest(base_sd, rest)
    merged.update({k: v.float() for k, v in states.items()})
    return merged


def refuse_baked_x070(version: str) -> None:
    """The rwkv pip package 0.8.32 reads time_state from a model .pth only in its v5/v6 class
    (RWKV_x070 loads the key and never uses it), so a baked RWKV-7 model would run stateless."""
    if version == "x070":
        raise UserError("an RWKV-7 model file cannot carry a state (the rwkv package and Runner "
                        "ignore time_state there); write a state file instead: rwkvft export "
                        "--format runner-state or ai00-state")


@contextlib.contextmanager
def state_off(model: nn.Module):
    """The reference of a state-tuned model: sequences start from zeros again."""
    saved = [b.att.time_state for b in model.blocks]
    for b in model.blocks:
        b.att.time_state = None
    try:
        yield model
    finally:
        for b, t in zip(model.blocks, saved):
            b.att.time_state = t


# Wraps no Linear, so no fits/apply_delta: its own merge (base + time_state, RWKV-6/5 model
# files only: check_merged) and its own state file formats (carries_state).
METHOD = PeftMethod(name="state", keys={"init": "zero", "prompt": None, "prompt_tokens": None},
                    parse=parse_state_config, inject=inject_state, suffixes=("time_state",),
                    default_lr=DEFAULT_LR, carries_state=True, merge=merge_state_adapter,
                    check_merged=refuse_baked_x070, reference=reference, switch_off=state_off,
                    cannot="a state adapter holds an initial WKV state, not a weight update: "
                           "export it with --format runner-state or ai00-state",
                    summary="state tuning: a trainable initial WKV state per layer, nothing else")
