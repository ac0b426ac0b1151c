"""--sample_prompts: a short greedy continuation of each prompt at every save, into samples.md.

A prompts file is either plain text, one prompt a line (write a line break inside a prompt as
the two characters \\n), or .jsonl records of the training formats: for a chat or prompt/response
record the prompt is everything before its last assistant answer (so it ends with "Assistant:"),
for a text record the text itself.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..generation import require_world_vocab
from ..utils import atomic_path, require_file

SAMPLES_FILE = "samples.md"


def _record_prompt(record, roles, n: int, path: Path) -> str:
    from ..data.formats import RecordError, record_segments, render
    try:
        segs, has_roles = record_segments(record, roles)
    except RecordError as e:
        raise UserError(f"--sample_prompts {path} line {n}: {e}") from None
    if not has_roles:
        return render(segs)
    last = max(i for i, (_, trained) in enumerate(segs) if trained)
    return render(segs[:last])


def read_prompts(path, roles=None) -> list[str]:
    from ..data.formats import Roles
    p = require_file(path, "--sample_prompts file")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"--sample_prompts {p} is not UTF-8 text") from None
    prompts = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if p.suffix.lower() == ".jsonl":
            try:
                record = json.loads(line)
            except ValueError:
                raise UserError(f"--sample_prompts {p} line {n} is not valid JSON") from None
            prompts.append(_record_prompt(record, roles or Roles(), n, p))
        else:
            prompts.append(line.replace("\\n", "\n"))
    if not prompts:
        raise UserError(f"--sample_prompts {p} holds no prompt; one prompt a line, or jsonl chats")
    return prompts


class SampleWriter:
    """Appends one section per save to proj_dir/samples.md (rewritten atomically each time)."""

    def __init__(self, prompts: list[str], proj_dir, max_tokens: int):
        from ..data.tokenizer import WorldTokenizer
        self.prompts = prompts
        self.path = Path(proj_dir) / SAMPLES_FILE
        self.max_tokens = max_tokens
        self.tokenizer = WorldTokenizer()
        self.last: list[str] = []          # the newest continuations (the demo prints them)

    def check_model(self, vocab_size: int) -> None:
        require_world_vocab(vocab_size, "--sample_prompts", "this one")

    def write(self, model, heading: str, device, forward_context=None) -> None:
        from ..generation import greedy
        from .evaluation import evaluating
        texts = []
        with evaluating(model):
            for prompt in self.prompts:
                ids = self.tokenizer.encode(prompt) or [0]
                texts.append(self.tokenizer.decode(greedy(model, ids, self.max_tokens, device,
                                                          forward_context)))
        self.last = texts
        parts = [f"## {heading}\n"]
        for i, (prompt, text) in enumerate(zip(self.prompts, texts), start=1):
            parts.append(f"### prompt {i}\n\n```text\n{prompt}\n```\n\ncontinuation:\n\n"
                         f"```text\n{text}\n```\n")
        old = self.path.read_text(encoding="utf-8") if self.path.exists() else \
            "# Sample generations (greedy)\n\n"
        with atomic_path(self.path) as tmp:
            tmp.write_text(old + "\n".join(parts) + "\n", encoding="utf-8")
