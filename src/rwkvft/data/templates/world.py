"""`world`: the RWKV World chat format (chat_templates.md §2, W7card): "User: ...\\n\\nAssistant: ..."
with cleaned turns (single "\\n" inside a reply), as g1 without think or tool rendering."""
from __future__ import annotations

from .g1 import G1


class World(G1):
    name = "world"
    help = "RWKV World chat: cleaned turns, no think or tools"
    think = False
    tools = False


TEMPLATE = World()
