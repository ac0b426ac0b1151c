"""The exported chat_template.jinja renders byte-identical text to our renderer, on every record kind
(rendered by transformers' own chat-template renderer, i.e. jinja2 in HF's sandbox)."""
from __future__ import annotations

import pytest

from rwkvft.data.conversation import conversation, to_messages
from rwkvft.data.formats import Roles, record_segments, render
from rwkvft.data.templates.jinja import jinja_template

from chat_records import RECORDS

ctu = pytest.importorskip("transformers.utils.chat_template_utils")


def hf_render(template: str, messages, tools=None, **kw) -> str:
    return ctu.render_jinja_template([messages], tools=tools, chat_template=template, **kw)[0][0]


@pytest.mark.parametrize("name", list(RECORDS))
@pytest.mark.parametrize("template", ["g1", "world", "raw"])
def test_jinja_renders_what_training_reads(name, template):
    roles = Roles(template=template)
    try:
        want = render(record_segments(RECORDS[name], roles)[0])
    except ValueError:  # a record this template cannot write: the Jinja refuses it too
        with pytest.raises(Exception, match="cannot render"):
            conv = conversation(RECORDS[name])
            hf_render(jinja_template(template), to_messages(conv), conv.tools or None)
        return
    conv = conversation(RECORDS[name])
    assert hf_render(jinja_template(template), to_messages(conv), conv.tools or None) == want


def test_custom_roles_and_messy_whitespace():
    roles = Roles("Q", "A", "Sys")
    rec = {"messages": [{"role": "system", "content": "\r\n  rules\n\n\n\n\n\nmore \n"},
                        {"role": "user", "content": "a\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\nb"},
                        {"role": "assistant", "content": "x\r\n\r\ny", "reasoning_content": "\n\n"}]}
    conv = conversation(rec)
    assert hf_render(jinja_template("g1", roles), to_messages(conv)) == render(record_segments(rec, roles)[0])
    assert render(record_segments(rec, roles)[0]) == "Sys: rules\nmore\n\nQ: a\nb\n\nA: <think>\n</think>\nx\ny\n\n"


def test_generation_prompts():
    t = jinja_template("g1")
    msgs = [{"role": "user", "content": "hi"}]
    assert hf_render(t, msgs, add_generation_prompt=True) == "User: hi\n\nAssistant:"
    assert hf_render(t, msgs, add_generation_prompt=True, enable_thinking=True) == "User: hi\n\nAssistant: <think"
    assert hf_render(t, msgs, add_generation_prompt=True, enable_thinking=False) == \
        "User: hi\n\nAssistant: <think>\n</think"
