"""The Hugging Face `chat_template` (Jinja) that writes the same text as our renderer.

`jinja_template(name, roles)` is a pure function: template name -> `chat_template.jinja` text. It
renders OpenAI-style messages (system / user / assistant with `reasoning_content` or a leading
<think>...</think>, `tool_calls` with object arguments, role `tool`) and `tools` exactly as
`render_conversation` does (tests/data/test_chat_jinja.py compares them byte for byte on every
record kind). Training appends the end-of-text token 0 after each conversation; the template does
not write it (it is the stop token, `eos_token_id` 0).

Generation prompt (`add_generation_prompt`): "Assistant:"; with `enable_thinking=True` "Assistant:
<think", with `enable_thinking=False` the fake think "Assistant: <think>\\n</think" (G1x §1).
It uses transformers' `tojson(separators=...)` and `raise_exception`, which `apply_chat_template` provides.
"""
from __future__ import annotations

import json

from .base import Roles
from .g1 import FUNCTION_OUTPUT, TOOLS_HEAD, TOOLS_TAIL

# clean(): G1's clean_txt without regular expressions: CRLF -> LF, halve runs of "\n" until none
# is left (32 rounds cover any run shorter than 2**32), strip
_MACROS = r"""
{%- macro clean(t) -%}
{%- set ns = namespace(s=(t or '')) -%}
{%- set ns.s = ns.s.replace('\r\n', '\n') -%}
{%- for _ in range(32) -%}{%- if '\n\n' in ns.s -%}{%- set ns.s = ns.s.replace('\n\n', '\n') -%}{%- endif -%}{%- endfor -%}
{{- ns.s.strip() -}}
{%- endmacro -%}
{%- macro ptype(s) -%}
{%- if s is mapping and s.enum is defined and s.enum is sequence and s.enum is not string -%}
{%- for v in s.enum -%}{{- (' | ' if not loop.first else '') + (v|tojson) -}}{%- endfor -%}
{%- elif s is mapping and s.type is defined and s.type is string and s.type == 'array' and s['items'] is defined and s['items'] is mapping and s['items'].type is defined and s['items'].type is string -%}
{{- s['items'].type + '[]' -}}
{%- elif s is mapping and s.type is defined and s.type is string -%}
{{- s.type -}}
{%- elif s is mapping and s.type is defined and s.type is sequence -%}
{%- for v in s.type -%}{{- (' | ' if not loop.first else '') + (v|string) -}}{%- endfor -%}
{%- else -%}any{%- endif -%}
{%- endmacro -%}
{%- macro signature(tool) -%}
{%- set f = tool.function if tool.function is defined else tool -%}
{%- set params = f.parameters if f.parameters is defined and f.parameters is mapping else {} -%}
{%- set props = params.properties if params.properties is defined and params.properties is mapping else {} -%}
{%- set req = params.required if params.required is defined and params.required is sequence else [] -%}
{{- f.name + '(' -}}
{%- for p, s in props.items() -%}
{{- (', ' if not loop.first else '') + p + ('' if p in req else '?') + ': ' + ptype(s) -}}
{%- endfor -%}
{{- ')' -}}
{%- endmacro -%}
{%- macro call_text(call) -%}
{%- set f = call.function if call.function is defined and call.function is not none else call -%}
{%- set args = f.arguments if f.arguments is defined and f.arguments is not none else {} -%}
{{- '```json\n' + ({'name': f.name, 'arguments': args}|tojson(separators=(',', ':'))) + '\n```' -}}
{%- endmacro -%}
"""

_CLEANING_TEMPLATE = r"""
{%- set msgs = messages -%}
{%- if tools -%}
{%- if not tools_ok -%}{{- raise_exception('template ' + template_name + ' cannot render tools') -}}{%- endif -%}
{%- set head = '' -%}
{%- if msgs and msgs[0].role == 'system' -%}{%- set head = clean(msgs[0].content) -%}{%- set msgs = msgs[1:] -%}{%- endif -%}
{{- system_role + ': ' + (head + '\n' if head else '') + tools_head -}}
{%- for t in tools -%}{{- '- ' + signature(t) + '\n' -}}{%- endfor -%}
{{- tools_tail + '\n\n' -}}
{%- endif -%}
{%- for m in msgs -%}
{%- if m.role == 'assistant' -%}
{%- set content = m.content or '' -%}
{%- set think = none -%}
{%- if m.reasoning_content is defined and m.reasoning_content is not none -%}{%- set think = m.reasoning_content -%}
{%- elif m.reasoning is defined and m.reasoning is not none -%}{%- set think = m.reasoning -%}
{%- elif m.thinking is defined and m.thinking is not none -%}{%- set think = m.thinking -%}
{%- elif content.lstrip().startswith('<think>') and '</think>' in content.lstrip() -%}
{%- set parts = content.lstrip()[7:].split('</think>', 1) -%}{%- set think = parts[0] -%}{%- set content = parts[1] -%}
{%- endif -%}
{%- set calls = m.tool_calls if m.tool_calls is defined and m.tool_calls else [] -%}
{%- if calls and not tools_ok -%}{{- raise_exception('template ' + template_name + ' cannot render tool calls') -}}{%- endif -%}
{%- set ns2 = namespace(body=clean(content)) -%}
{%- for c in calls -%}{%- set ns2.body = (ns2.body + '\n' if ns2.body else '') + call_text(c) -%}{%- endfor -%}
{%- if think is none -%}
{{- assistant_role + ': ' + ns2.body + '\n\n' -}}
{%- else -%}
{%- if not think_ok -%}{{- raise_exception('template ' + template_name + ' cannot render think text') -}}{%- endif -%}
{%- set t = clean(think) -%}
{{- assistant_role + ': ' + ('<think>\n' + t + '\n</think>' if t else '<think>\n</think>') + ('\n' + ns2.body if ns2.body else '') + '\n\n' -}}
{%- endif -%}
{%- elif m.role == 'tool' -%}
{%- if not tools_ok -%}{{- raise_exception('template ' + template_name + ' cannot render tool calls') -}}{%- endif -%}
{{- user_role + ': ' + function_output + clean(m.content) + '\n\n' -}}
{%- elif m.role == 'user' -%}
{{- user_role + ': ' + clean(m.content) + '\n\n' -}}
{%- elif m.role == 'system' -%}
{{- system_role + ': ' + clean(m.content) + '\n\n' -}}
{%- else -%}{{- raise_exception('unknown role ' + m.role) -}}
{%- endif -%}
{%- endfor -%}
"""

_RAW_TEMPLATE = r"""
{%- if tools -%}{{- raise_exception('template raw cannot render tools') -}}{%- endif -%}
{%- for m in messages -%}
{%- if m.role == 'assistant' -%}
{%- if (m.tool_calls is defined and m.tool_calls) or (m.reasoning_content is defined and m.reasoning_content is not none) -%}
{{- raise_exception('template raw cannot render tool calls or think text') -}}{%- endif -%}
{{- assistant_role + ': ' + (m.content or '') + '\n\n' -}}
{%- elif m.role == 'user' -%}{{- user_role + ': ' + m.content + '\n\n' -}}
{%- elif m.role == 'system' -%}{{- system_role + ': ' + m.content + '\n\n' -}}
{%- else -%}{{- raise_exception('template raw cannot render role ' + m.role) -}}
{%- endif -%}
{%- endfor -%}
"""

_GENERATION = r"""
{%- if add_generation_prompt -%}
{%- if enable_thinking is defined and enable_thinking and think_ok -%}{{- assistant_role + ': <think' -}}
{%- elif enable_thinking is defined and not enable_thinking and think_ok -%}{{- assistant_role + ': <think>\n</think' -}}
{%- else -%}{{- assistant_role + ':' -}}{%- endif -%}
{%- endif -%}
"""


def _set(name: str, value) -> str:
    return "{%- set " + name + " = " + json.dumps(value) + " -%}\n"


def jinja_template(name: str, roles: Roles | None = None) -> str:
    """The chat_template.jinja text for chat template `name` (g1, world or raw)."""
    from . import get_template
    template = get_template(name)
    roles = roles or Roles()
    cleaning = name != "raw"
    head = "".join(_set(k, v) for k, v in (
        ("template_name", name), ("user_role", roles.user), ("assistant_role", roles.assistant),
        ("system_role", roles.system), ("tools_head", TOOLS_HEAD), ("tools_tail", TOOLS_TAIL),
        ("function_output", FUNCTION_OUTPUT)))
    head += "{%- set think_ok = " + ("true" if getattr(template, "think", False) else "false") + " -%}\n"
    head += "{%- set tools_ok = " + ("true" if getattr(template, "tools", False) else "false") + " -%}\n"
    body = (_MACROS + _CLEANING_TEMPLATE) if cleaning else _RAW_TEMPLATE
    return (f"{{#- rwkvft chat template {name!r}: the text rwkvft trains on (data/templates/jinja.py) -#}}\n"
            + head + body.strip() + "\n" + _GENERATION.strip() + "\n")


def write_chat_template(folder, tokenizer_config: dict, name: str, roles: Roles | None = None) -> None:
    """Write folder/chat_template.jinja and set tokenizer_config["chat_template"] (the caller writes it)."""
    from pathlib import Path
    text = jinja_template(name, roles)
    (Path(folder) / "chat_template.jinja").write_text(text, encoding="utf-8")
    tokenizer_config["chat_template"] = text


def run_chat_template(adapter_path) -> str:
    """The chat template a run trained with, from the train_config.json beside its adapter:
    its chat_template; "raw" for a run from before templates; "g1" when there is none."""
    from pathlib import Path
    cfg = Path(adapter_path).parent / "train_config.json"
    try:
        saved = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "g1"
    return saved.get("chat_template", "raw") if isinstance(saved, dict) else "g1"
