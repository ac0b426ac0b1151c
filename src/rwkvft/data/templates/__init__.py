"""Chat templates: a `Conversation` -> text segments, each marked trained or not.

One module per template; registering one is one line below. The public entry point (also used by
preference tuning for prompt/chosen/rejected) is `render_conversation`; `jinja_template(name)`
(jinja.py) gives the Hugging Face `chat_template` that renders the same text.
"""
from __future__ import annotations

from ...errors import UserError
from ..conversation import Conversation, RecordError, from_messages
from . import g1, raw, world
from .base import Roles, Segments

TEMPLATES: dict = {}


def register(template) -> None:
    TEMPLATES[template.name] = template


register(g1.TEMPLATE)
register(world.TEMPLATE)
register(raw.TEMPLATE)

DEFAULT = "g1"


def get_template(name: str):
    if name not in TEMPLATES:
        raise UserError(f"unknown chat_template {name!r}; use one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def render_conversation(conv: Conversation | list, template: str | None = None, roles: Roles | None = None,
                        tools: list | None = None) -> Segments:
    """Segments [(text, trained)] of one conversation: a `Conversation`, or OpenAI-style message dicts
    (+ `tools`). Tokenize each segment on its own and concatenate: that is exactly what training
    reads (plus the EOD 0 the pipeline appends, trained). `template` defaults to roles.template.
    RecordError when the template cannot render it or no assistant text is trained."""
    roles = roles or Roles()
    if isinstance(conv, list):
        conv = from_messages(conv, tools)
    segs = get_template(template or roles.template).render(conv, roles)
    if not any(trained for _, trained in segs):
        raise RecordError("conversation has no assistant message")
    return segs


__all__ = ["TEMPLATES", "DEFAULT", "Roles", "Segments", "get_template", "register", "render_conversation"]
