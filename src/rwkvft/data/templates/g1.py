"""`g1`: the RWKV G1/G0 chat format (chat_templates.md §1, §2, §4, §5).

- Turns are "Role: text" joined by "\\n\\n"; system, user and tool text is cleaned (`clean`), and so is
  the reply: "\\n\\n" inside a reply would teach the model to end its turn mid-answer.
- Reply: prompt "Assistant:", trained " {answer}\\n\\n" (+ EOD, added by the pipeline).
- Think: prompt "Assistant: <think", trained ">\\n{think}\\n</think>\\n{answer}\\n\\n"; an empty think is
  the fake think "<think>\\n</think>". With train_on_think off the think text is prompt and the loss
  starts after "</think", as at inference with a fake-think prompt. The whitespace around the think
  text is our choice (§8: not verified against BlinkDL's data).
- Tools: a "System: Tools:\\n- name(arg: type, opt?: type)\\n...\\nReturn only a JSON function call."
  turn (after the system text, in the same turn); a call is a ```json {"name","arguments"} block in the
  reply; a tool result is the untrained turn "User: Function output:\\n{result}".
"""
from __future__ import annotations

from ..conversation import Conversation, Message, RecordError
from .base import Roles, Segments, clean, merge_segments, tool_call_text, tool_signature

TOOLS_HEAD = "Tools:\n"
TOOLS_TAIL = "Return only a JSON function call."
FUNCTION_OUTPUT = "Function output:\n"


def reply_body(m: Message) -> str:
    calls = [tool_call_text(c.name, c.arguments) for c in m.tool_calls]
    return "\n".join(([clean(m.content)] if clean(m.content) else []) + calls)


def think_block(think: str) -> str:
    think = clean(think)
    return f"<think>\n{think}\n</think>" if think else "<think>\n</think>"


class G1:
    name = "g1"
    help = "RWKV G1 chat: cleaned turns, think blocks, G1 tool calls (default)"
    think = True
    tools = True

    def _assistant(self, m: Message, roles: Roles) -> Segments:
        body = reply_body(m)
        if m.think is None:
            return [(f"{roles.assistant}:", False), (f" {body}\n\n", m.trained)]
        if not self.think:
            raise RecordError(f"template {self.name!r} cannot render think text; use --chat_template g1")
        block, sep = think_block(m.think), "\n" if body else ""
        if roles.train_on_think:
            return [(f"{roles.assistant}: <think", False), (f"{block[len('<think'):]}{sep}{body}\n\n", m.trained)]
        return [(f"{roles.assistant}: {block[:-1]}", False), (f">{sep}{body}\n\n", m.trained)]

    def _tools_turn(self, conv: Conversation, system: str, roles: Roles) -> str:
        lines = "".join(f"- {tool_signature(t)}\n" for t in conv.tools)
        head = f"{system}\n" if system else ""
        return f"{roles.system}: {head}{TOOLS_HEAD}{lines}{TOOLS_TAIL}\n\n"

    def render(self, conv: Conversation, roles: Roles) -> Segments:
        msgs = list(conv.messages)
        if not self.tools and (conv.tools or any(m.role == "tool" or m.tool_calls for m in msgs)):
            raise RecordError(f"template {self.name!r} cannot render tool calls; use --chat_template g1")
        segs: Segments = []
        if conv.tools:  # the tool list joins the leading system text in one System turn
            system = clean(msgs.pop(0).content) if msgs and msgs[0].role == "system" else ""
            segs.append((self._tools_turn(conv, system, roles), False))
        for m in msgs:
            if m.role == "assistant":
                segs += self._assistant(m, roles)
            elif m.role == "tool":
                segs.append((f"{roles.user}: {FUNCTION_OUTPUT}{clean(m.content)}\n\n", False))
            else:
                name = roles.user if m.role == "user" else roles.system
                segs.append((f"{name}: {clean(m.content)}\n\n", False))
        return merge_segments(segs)


TEMPLATE = G1()
