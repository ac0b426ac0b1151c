"""`raw`: rwkvft's format before chat templates, byte for byte (main@fd54d68).

"System: {s}\\n\\nUser: {q}\\n\\nAssistant:" + trained " {a}\\n\\n"; content exactly as given (no
cleaning), each turn tokenized on its own. No think or tool rendering: such records are skipped.
"""
from __future__ import annotations

from ..conversation import Conversation, RecordError
from .base import Roles, Segments


class Raw:
    name = "raw"
    help = "rwkvft's format before templates: content exactly as given, no think or tools"

    def render(self, conv: Conversation, roles: Roles) -> Segments:
        if conv.tools:
            raise RecordError("template 'raw' cannot render tools; use --chat_template g1")
        segs: Segments = []
        for m in conv.messages:
            if m.role == "tool" or m.tool_calls:
                raise RecordError("template 'raw' cannot render tool calls; use --chat_template g1")
            if m.think is not None:
                raise RecordError("template 'raw' cannot render think text; use --chat_template g1")
            if m.role == "assistant":
                segs += [(f"{roles.assistant}:", False), (f" {m.content}\n\n", m.trained)]
            else:
                name = roles.user if m.role == "user" else roles.system
                segs.append((f"{name}: {m.content}\n\n", False))
        return segs


TEMPLATE = Raw()
