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

import torch
from torch import nn

from ..errors import UserError
from ..models.time_state import set_time_state, time_state_key
from .base import AdaptedLinear

METHOD = "state"
CONFIG_KEYS = {"init", "prompt", "prompt_tokens"}
INITS = ("zero", "base")
FILE_SUFFIXES = ("time_state",)   # local names this method adds to adapter files
# AdamW on a state: see README "State tuning" and docs/benchmarks.md for the experiment
DEFAULT_LR = 1e-2


def parse_state_config(d: dict):
    """--peft_config dict -> AdapterConfig(method="state", init=...)."""
    from .config import AdapterConfig
    unknown = sorted(set(d) - CONFIG_KEYS)
    if unknown:
        raise UserError(f"--peft_config: unknown key {unknown[0]!r} for state; "
                        f"accepted keys: {', '.join(sorted(CONFIG_KEYS))}")
    init = d.get("init", "zero")
    if init not in INITS:
        raise UserError(f"--peft_config: init must be \"zero\" or \"base\", got {init!r}")
    prompt = _prompt_tokens(d)
    if (init == "base") != (prompt is not None):
        raise UserError("--peft_config: init \"base\" needs a \"prompt\" (or \"prompt_tokens\"), "
                        "and a prompt is only used with init \"base\"")
    return AdapterConfig(method=METHOD, r=0, init=init, prompt_tokens=prompt)


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


def inject_state(model: nn.Module, cfg, train_parts=None) -> list[str]:
    """inject() for state tuning: add the time_state parameters, freeze all else but
    train_parts; return the sorted trainable names (the contract of adapters.inject)."""
    from .inject import _PART_MATCH, _check_parts
    parts = _check_parts(train_parts)
    if any(b.att.time_state is not None for b in model.blocks) or \
            any(isinstance(m, AdaptedLinear) for m in model.modules()):
        raise UserError("this model already has a state or adapters; load a fresh base model "
                        "before injecting again")
    names = set(set_time_state(model, initial_states(model, cfg), trainable=True))
    for pname, p in model.named_parameters():
        if pname not in names and any(_PART_MATCH[part](pname) for part in parts):
            names.add(pname)
        p.requires_grad_(pname in names)
    for part in parts:
        if not any(_PART_MATCH[part](n) for n in names):
            raise UserError(f"train part {part!r} matches no parameter of this model; drop it from train_parts")
    cfg.targets, cfg.train_parts = [], parts
    model.adapter_config = cfg
    return sorted(names)


class FrozenLinear(AdaptedLinear):
    """A frozen Linear with no adapter, so --quant can store the base of a state-tuned model
    quantized (adapters.quant quantizes AdaptedLinear bases)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_forward(x)


def wrap_frozen_linears(model: nn.Module) -> int:
    """Put the method's default target Linears (MiSS's targets) in FrozenLinear; returns how many."""
    from .inject import DEFAULT_TARGETS, _matches, _set_child
    wanted = DEFAULT_TARGETS[model.config.version]
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear and n != "head"
             and any(_matches(n, t) for t in wanted)]
    for n in names:
        _set_child(model, n, FrozenLinear(model.get_submodule(n)))
    return len(names)
