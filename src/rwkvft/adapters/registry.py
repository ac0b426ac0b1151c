"""The PEFT method registry: name -> PeftMethod (adapters/method.py describes the record).

Built-in methods are registered below, one line each; `register` adds one at run time (a
plug-in, or a test's throw-away method), and every consumer (`--peft` choices, parse_peft,
inject, adapters.merge, `rwkvft merge`, bench) sees it without any other edit.
"""
from __future__ import annotations

from ..errors import UserError
from . import full, lora, miss, pissa, state
from .config import AdapterConfig, load_json
from .method import PeftMethod

_METHODS: dict[str, PeftMethod] = {}


def register(method: PeftMethod) -> PeftMethod:
    taken = {n for m in _METHODS.values() for n in (m.name, *m.aliases)}
    clash = sorted({method.name, *method.aliases} & taken)
    if clash:
        raise ValueError(f"PEFT method name {clash[0]!r} is already registered")
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    _METHODS.pop(name, None)


register(miss.METHOD)
register(lora.METHOD)
register(pissa.METHOD)
register(full.METHOD)
register(state.METHOD)


def names() -> tuple[str, ...]:
    """Registered method names, built-ins first (the --peft choices)."""
    return tuple(_METHODS)


def methods() -> tuple[PeftMethod, ...]:
    return tuple(_METHODS.values())


def get(name: str) -> PeftMethod:
    """The method called `name` (or one of its aliases); UserError for an unknown name."""
    low = str(name).lower()
    for m in _METHODS.values():
        if low == m.name or low in m.aliases:
            return m
    raise UserError(f"unknown --peft method {name!r}; use one of {', '.join(_METHODS)}")


def all_suffixes() -> set[str]:
    """Every local tensor name some method stores in adapter files (plus RWKV-PEFT's own)."""
    return {s for m in _METHODS.values() for s in m.suffixes} | {"disha", "bone"}


# other tools' spellings of our peft_config keys (HF peft, RWKV-PEFT's *_config JSON)
_KEY_SYNONYMS = {"rank": "r", "lora_r": "r", "bone_r": "r", "pissa_r": "r", "miss_r": "r",
                 "bone_mode": "mode", "alpha": "lora_alpha"}


def _meant_key(key: str, keys) -> str:
    """'; did you mean 'r'?' for another tool's spelling or a typo of an accepted key."""
    import difflib
    meant = _KEY_SYNONYMS.get(key)
    if meant not in keys:
        close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.7)
        meant = close[0] if close else None
    return f" (did you mean {meant!r}?)" if meant else ""


def parse_peft(method: str, peft_config=None) -> AdapterConfig:
    """Validate `--peft METHOD --peft_config JSON` and return an AdapterConfig."""
    m = get(method)
    d = load_json(peft_config)
    unknown = sorted(set(d) - set(m.keys))
    if unknown:
        accepted = ", ".join(sorted(m.keys)) or "none (pass no --peft_config)"
        raise UserError(f"--peft_config: unknown key {unknown[0]!r} for {m.name}"
                        f"{_meant_key(unknown[0], m.keys)}; accepted keys: {accepted}")
    return m.parse(d)
