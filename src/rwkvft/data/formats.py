"""One jsonl/json/parquet record -> text segments, each marked trained (response) or not (prompt).

Record kinds, tried in this order:
- chat: {"messages": [{"role": "user"|"assistant"|"system", "content": str}, ...]}; ShareGPT
  {"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...]} works too. An optional
  top-level "system" string comes first.
- prompt/response: {"prompt" or "instruction" (+ optional "input"), "response" or "output"}.
- text: {"text": str} (the field name is configurable). No roles: every token is trained.

Rendering is the RWKV chat format:
    "System: {s}\\n\\nUser: {q}\\n\\nAssistant: {a}\\n\\nUser: ...".
The trained segment of an assistant turn is " {a}\\n\\n" (the answer and the blank line that ends
the turn, so the model learns to stop); "Assistant:" itself is prompt. An instruction with an input
becomes the user turn "{instruction}\\n{input}". Content is used exactly as given.

The role names ("User", "Assistant", "System") are parameters of `Roles`.
"""
from __future__ import annotations

from dataclasses import dataclass

Segments = list[tuple[str, bool]]  # (text, trained)

_USER = ("user", "human")
_ASSISTANT = ("assistant", "gpt", "bot", "model")
_SYSTEM = ("system",)
PROMPT_KEYS = ("prompt", "instruction")
RESPONSE_KEYS = ("response", "output")


class RecordError(ValueError):
    """A record that cannot be used; the message says why (it goes into the skip summary)."""


@dataclass(frozen=True)
class Roles:
    user: str = "User"
    assistant: str = "Assistant"
    system: str = "System"


def _string(value, what: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{what} is not a string")
    return value


def _turn_segments(role: str, content: str, roles: Roles) -> Segments:
    role = role.lower()
    if role in _USER:
        return [(f"{roles.user}: {content}\n\n", False)]
    if role in _SYSTEM:
        return [(f"{roles.system}: {content}\n\n", False)]
    if role in _ASSISTANT:
        return [(f"{roles.assistant}:", False), (f" {content}\n\n", True)]
    raise RecordError(f"unknown role {role!r}")


def chat_segments(turns, roles: Roles, system=None, keys=("role", "content")) -> Segments:
    if not isinstance(turns, list) or not turns:
        raise RecordError("messages is not a non-empty list")
    segs: Segments = []
    if system is not None:
        segs += _turn_segments("system", _string(system, "system"), roles)
    for turn in turns:
        if not isinstance(turn, dict) or keys[0] not in turn or keys[1] not in turn:
            raise RecordError(f"a message lacks {keys[0]!r} or {keys[1]!r}")
        segs += _turn_segments(_string(turn[keys[0]], keys[0]), _string(turn[keys[1]], keys[1]), roles)
    if not any(trained for _, trained in segs):
        raise RecordError("conversation has no assistant message")
    return segs


def pair_segments(prompt: str, response: str, roles: Roles, extra_input: str = "") -> Segments:
    user = f"{prompt}\n{extra_input}" if extra_input else prompt
    return _turn_segments("user", user, roles) + _turn_segments("assistant", response, roles)


def _first_key(record: dict, keys) -> str | None:
    return next((k for k in keys if k in record), None)


def record_segments(record, roles: Roles = Roles(), text_field: str = "text",
                    sft_field: tuple[str, str] | None = None) -> tuple[Segments, bool]:
    """(segments, has_roles) for one parsed record; RecordError when it fits no kind."""
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    if sft_field:
        q, a = sft_field
        if q not in record or a not in record:
            raise RecordError(f"missing field {q!r} or {a!r}")
        return pair_segments(_string(record[q], q), _string(record[a], a), roles), True
    if "messages" in record:
        return chat_segments(record["messages"], roles, record.get("system")), True
    if "conversations" in record:
        return chat_segments(record["conversations"], roles, record.get("system"), ("from", "value")), True
    pk, rk = _first_key(record, PROMPT_KEYS), _first_key(record, RESPONSE_KEYS)
    if pk and rk:
        extra = _string(record.get("input") or "", "input")
        return pair_segments(_string(record[pk], pk), _string(record[rk], rk), roles, extra), True
    if text_field in record:
        text = _string(record[text_field], text_field)
        if not text:
            raise RecordError(f"empty {text_field!r}")
        return [(text, True)], False
    raise RecordError(f"no {text_field!r}, 'messages', or prompt/response fields")


def render(segments: Segments) -> str:
    """The text of a record's segments (what its tokens decode to), e.g. a sample prompt."""
    return "".join(text for text, _ in segments)
