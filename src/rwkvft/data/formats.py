"""One jsonl/json/parquet/dataset record -> text segments, each marked trained (response) or not (prompt).

Record kinds, tried in this order (layouts: data/conversation.py):
- chat: OpenAI {"messages": [...]} (tools, tool calls, think fields), TRL {"prompt": [...],
  "completion": [...]}, ShareGPT {"conversations": [...]}; an optional top-level "system" string.
- prompt/response: {"prompt" or "instruction" (+ optional "input"), "response" or "output"} with
  Alpaca's optional "system" and "history".
- text: {"text": str} (the field name is configurable). No roles: every token is trained.

How a chat is written out is the chat template's (`Roles.template`, data/templates/): `g1` (default)
cleans turns and renders think and tool calls; `raw` is rwkvft's earlier format byte for byte:
    "System: {s}\\n\\nUser: {q}\\n\\nAssistant:" + trained " {a}\\n\\n".
The trained segment of an assistant turn is the answer and the blank line that ends the turn (so
the model learns to stop); "Assistant:" itself is prompt.
"""
from __future__ import annotations

from .conversation import PROMPT_KEYS, RESPONSE_KEYS, RecordError, conversation  # noqa: F401 (re-exported)
from .templates import render_conversation
from .templates.base import Roles, Segments

__all__ = ["RecordError", "Roles", "Segments", "record_segments", "render", "PROMPT_KEYS", "RESPONSE_KEYS"]


def record_segments(record, roles: Roles = Roles(), text_field: str = "text",
                    sft_field: tuple[str, str] | None = None) -> tuple[Segments, bool]:
    """(segments, has_roles) for one parsed record; RecordError when it fits no kind."""
    conv = conversation(record, text_field, sft_field)
    if isinstance(conv, str):
        return [(conv, True)], False
    return render_conversation(conv, roles=roles), True


def render(segments: Segments) -> str:
    """The text of a record's segments (what its tokens decode to), e.g. a sample prompt."""
    return "".join(text for text, _ in segments)
