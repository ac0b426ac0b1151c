"""One record (OpenAI messages, ShareGPT conversations, Alpaca, TRL prompt/completion) -> a `Conversation`.

This module knows record layouts (../shared/specs/chat_templates.md §4), nothing about how a
conversation is written out: `data/templates/` renders a Conversation for one chat template.

- OpenAI / TRL: {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}], "tools"?}
  with assistant "tool_calls" [{"type": "function", "function": {"name", "arguments"}}] (arguments an
  object or a JSON string) and think text in "reasoning_content", "reasoning" or "thinking" (or a
  leading "<think>...</think>" in the content).
- TRL prompt/completion: {"prompt": [messages], "completion": [assistant messages]}.
- ShareGPT: {"conversations": [{"from": "human"|"gpt"|"system"|"function_call"|"observation"|
  "gpt_ignore", "value": str}], "system"?, "tools"?}; "gpt_ignore" turns are rendered, never trained.
- Alpaca: "instruction"/"prompt" (+ "input", joined "instruction\\ninput"), "output"/"response",
  "system", "history" [[q, a], ...] (history answers are trained, as LLaMA-Factory does).

A value that is null counts as absent: Arrow/parquet tables fill missing fields with null, and a
record must read the same from jsonl and from a Hugging Face dataset.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field


class RecordError(ValueError):
    """A record that cannot be used; the message says why (it goes into the skip summary)."""


@dataclass
class ToolCall:
    name: str
    arguments: object             # parsed JSON (normally an object)


@dataclass
class Message:
    role: str                     # system | user | assistant | tool
    content: str = ""
    think: str | None = None      # assistant think text (None = the record gave none)
    tool_calls: list[ToolCall] = field(default_factory=list)
    trained: bool = True          # assistant turns only; False for ShareGPT "gpt_ignore"


@dataclass
class Conversation:
    messages: list[Message]
    tools: list = field(default_factory=list)   # JSON-schema tool descriptions


USER = ("user", "human")
ASSISTANT = ("assistant", "gpt", "bot", "model")
SYSTEM = ("system",)
TOOL = ("tool", "observation", "function_response")
TOOL_CALL = ("function_call", "function")
IGNORED_ASSISTANT = ("gpt_ignore",)
THINK_FIELDS = ("reasoning_content", "reasoning", "thinking")
PROMPT_KEYS = ("prompt", "instruction")
RESPONSE_KEYS = ("response", "output")


def get(d: dict, key: str):
    """d[key], with null read as absent (see the module docstring)."""
    return d.get(key) if isinstance(d, dict) else None


def string(value, what: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{what} is not a string")
    return value


def _json_value(value, what: str):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise RecordError(f"{what} is not JSON") from None
    return value


def _tool_call(call) -> ToolCall:
    fn = get(call, "function") if get(call, "function") is not None else call
    name = get(fn, "name")
    if not isinstance(name, str) or not name:
        raise RecordError("a tool call has no function name")
    args = _json_value(get(fn, "arguments") if get(fn, "arguments") is not None else {},
                       "tool call arguments")
    return ToolCall(name, args)


def split_think(content: str) -> tuple[str | None, str]:
    """A reply that opens with "<think>...</think>" -> (think text, answer); else (None, content)."""
    head = content.lstrip()
    if head.startswith("<think>") and "</think>" in head:
        think, answer = head[len("<think>"):].split("</think>", 1)
        return think, answer
    return None, content


def _assistant(content, msg, trained: bool = True) -> Message:
    calls = get(msg, "tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise RecordError("tool_calls is not a list")
    calls = [_tool_call(c) for c in calls or []]
    if content is None and not calls:
        raise RecordError("a message lacks 'role' or 'content'")
    content = "" if content is None else string(content, "content")
    think = next((get(msg, k) for k in THINK_FIELDS if get(msg, k) is not None), None)
    if think is None:
        think, content = split_think(content)
    else:
        think = string(think, "think text")
    return Message("assistant", content, think, calls, trained)


def message(role, content, msg=None) -> Message:
    """One turn; `msg` is the whole message dict (tool calls, think fields)."""
    role = string(role, "role").lower()
    if role in ASSISTANT or role in IGNORED_ASSISTANT:
        return _assistant(content, msg, trained=role not in IGNORED_ASSISTANT)
    if role in TOOL_CALL:  # ShareGPT function_call: the value is {"name", "arguments"} as JSON
        call = _json_value(string(content, "function call"), "function call")
        return Message("assistant", "", None, [_tool_call(call)])
    if content is None:
        raise RecordError("a message lacks 'role' or 'content'")
    content = string(content, "content")
    for kind, names in (("user", USER), ("system", SYSTEM), ("tool", TOOL)):
        if role in names:
            return Message(kind, content)
    raise RecordError(f"unknown role {role!r}")


def _turns(turns, keys=("role", "content")) -> list[Message]:
    if not isinstance(turns, list) or not turns:
        raise RecordError("messages is not a non-empty list")
    out = []
    for turn in turns:
        if not isinstance(turn, dict) or keys[0] not in turn or (keys[1] not in turn and
                                                                 get(turn, "tool_calls") is None):
            raise RecordError(f"a message lacks {keys[0]!r} or {keys[1]!r}")
        out.append(message(turn[keys[0]], get(turn, keys[1]), turn))
    return out


def _tools(record) -> list:
    tools = _json_value(get(record, "tools"), "tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise RecordError("tools is not a list")
    return tools


def _system(record) -> list[Message]:
    s = get(record, "system")
    return [] if s is None or s == "" else [Message("system", string(s, "system"))]


def _pair(prompt: str, response: str, extra_input: str = "") -> list[Message]:
    user = f"{prompt}\n{extra_input}" if extra_input else prompt
    return [Message("user", user), _assistant(response, None)]


def _history(record) -> list[Message]:
    history = get(record, "history")
    if history is None:
        return []
    if not isinstance(history, list) or not all(isinstance(h, (list, tuple)) and len(h) == 2 for h in history):
        raise RecordError("history is not a list of [question, answer] pairs")
    return [m for q, a in history for m in _pair(string(q, "history question"), string(a, "history answer"))]


def _first_key(record: dict, keys) -> str | None:
    return next((k for k in keys if get(record, k) is not None), None)


def conversation(record, text_field: str = "text", sft_field=None) -> Conversation | str:
    """The Conversation of a record with roles, or the text (str) of a plain-text record."""
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    if sft_field:
        q, a = sft_field
        if get(record, q) is None or get(record, a) is None:
            raise RecordError(f"missing field {q!r} or {a!r}")
        return Conversation(_pair(string(record[q], q), string(record[a], a)))
    if get(record, "messages") is not None:
        return Conversation(_system(record) + _turns(record["messages"]), _tools(record))
    if get(record, "conversations") is not None:
        return Conversation(_system(record) + _turns(record["conversations"], ("from", "value")),
                            _tools(record))
    if isinstance(get(record, "prompt"), list) and isinstance(get(record, "completion"), list):
        return Conversation(_turns(record["prompt"]) + _turns(record["completion"]), _tools(record))
    pk, rk = _first_key(record, PROMPT_KEYS), _first_key(record, RESPONSE_KEYS)
    if pk and rk:
        extra = string(get(record, "input") or "", "input")
        turns = _history(record) + _pair(string(record[pk], pk), string(record[rk], rk), extra)
        return Conversation(_system(record) + turns)
    if get(record, text_field) is not None:
        text = string(record[text_field], text_field)
        if not text:
            raise RecordError(f"empty {text_field!r}")
        return text
    raise RecordError(f"no {text_field!r}, 'messages', or prompt/response fields")


def from_messages(messages: list[dict], tools=None) -> Conversation:
    """A Conversation from OpenAI-style message dicts (the Python API: `render_conversation`)."""
    return Conversation(_turns(messages), _tools({"tools": tools}))


def to_messages(conv: Conversation) -> list[dict]:
    """OpenAI/HF message dicts of a Conversation (think as reasoning_content, tool-call arguments as
    objects): what a Hugging Face chat_template takes."""
    out = []
    for m in conv.messages:
        d = {"role": m.role, "content": m.content}
        if m.think is not None:
            d["reasoning_content"] = m.think
        if m.tool_calls:
            d["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                               for c in m.tool_calls]
        out.append(d)
    return out
