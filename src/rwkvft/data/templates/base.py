"""What every chat template shares: the render options, the segment list, and G1's text rules.

A template turns a `Conversation` into segments (text, trained): the text the model reads, cut
where the loss starts and stops. Adjacent segments with the same flag are merged by
`merge_segments` (templates other than raw), so the prompt part is tokenized in one piece, as at
inference, where the whole prompt is encoded at once (chat_templates.md §5).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

Segments = list[tuple[str, bool]]  # (text, trained)


@dataclass(frozen=True)
class Roles:
    """How chat records are rendered: role names, the chat template, whether think text is trained."""
    user: str = "User"
    assistant: str = "Assistant"
    system: str = "System"
    template: str = "g1"
    train_on_think: bool = True


_RUNS = re.compile(r"\n{2,}")


def clean(text: str) -> str:
    """G1's clean_txt (G1x §1): CRLF -> LF, every run of blank lines -> one line break, strip.
    "\\n\\n" ends a turn in RWKV pretraining, so it must never occur inside one."""
    return _RUNS.sub("\n", text.replace("\r\n", "\n")).strip()


def compact_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def tool_call_text(name: str, arguments) -> str:
    """One call as G1x writes it: a ```json block holding {"name":...,"arguments":{...}} (compact)."""
    return "```json\n" + compact_json({"name": name, "arguments": arguments}) + "\n```"


def _param_type(schema) -> str:
    if not isinstance(schema, dict):
        return "any"
    if isinstance(schema.get("enum"), list):
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    t = schema.get("type")
    if isinstance(t, list):
        return " | ".join(str(x) for x in t)
    if t == "array" and isinstance(schema.get("items"), dict) and isinstance(schema["items"].get("type"), str):
        return schema["items"]["type"] + "[]"
    return t if isinstance(t, str) else "any"


def tool_signature(tool) -> str:
    """A JSON-schema tool -> G1x's one-line signature, e.g. `get_weather(location: string, unit?: "c" | "f")`
    (a parameter not in "required" gets "?")."""
    fn = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        from ..conversation import RecordError
        raise RecordError("a tool has no function name")
    params = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {}
    props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
    required = params.get("required") if isinstance(params.get("required"), list) else []
    args = [f"{p}{'' if p in required else '?'}: {_param_type(s)}" for p, s in props.items()]
    return f"{fn['name']}({', '.join(args)})"


def merge_segments(segs: Segments) -> Segments:
    out: Segments = []
    for text, trained in segs:
        if out and out[-1][1] == trained:
            out[-1] = (out[-1][0] + text, trained)
        elif text:
            out.append((text, trained))
    return out
