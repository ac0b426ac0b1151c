"""Preference pairs (prompt, chosen, rejected) for --objective dpo|orpo|simpo and `rwkvft eval`.

Records (jsonl, or a .json list / .parquet), TRL's column names (spec preference_tuning.md §7):
- standard:        {"prompt": str, "chosen": str, "rejected": str}
- conversational:  {"prompt": [messages], "chosen": [messages], "rejected": [messages]}; the prompt
                   may be many turns (system/user/assistant), the answers are assistant turns
- implicit prompt: {"chosen": [messages], "rejected": [messages]}: the prompt is the longest
                   common run of leading messages (TRL's extract_prompt)
An optional top-level "system" string comes first. Rendering is SFT's (data/formats.py): the
prompt is the turns up to and including "Assistant:", an answer is " {a}\\n\\n" plus EOD (the
tokens the SFT qa mask trains). Prompt and answers are tokenized separately and concatenated, so
the prompt/answer boundary is exact whatever the greedy World tokenizer would do across it.

Truncation to ctx_len (a pair is prompt + answer, ctx_len + 1 tokens at most: inputs are all
but the last token): the prompt keeps its END, the answers their START; the prompt keeps all it
can next to the longer answer, but at least half the room. A pair whose answers are identical
after truncation teaches nothing and is skipped and counted, as is a record with identical
answers; malformed records (missing chosen, wrong types) count against --max_bad_fraction.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .formats import RecordError, Roles

_USER, _ASSISTANT, _SYSTEM = ("user", "human"), ("assistant", "gpt", "bot", "model"), ("system",)


def _string(value, what: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{what} is not a string")
    return value


def _turn_segments(role: str, content: str, roles: Roles):
    """The plain RWKV chat rendering of one turn (today's SFT "User: ...\n\nAssistant: ..." form)."""
    role = role.lower()
    if role in _USER:
        return [(f"{roles.user}: {content}\n\n", False)]
    if role in _SYSTEM:
        return [(f"{roles.system}: {content}\n\n", False)]
    if role in _ASSISTANT:
        return [(f"{roles.assistant}:", False), (f" {content}\n\n", True)]
    raise RecordError(f"unknown role {role!r}")
from .tokenizer import EOD


@dataclass(frozen=True)
class Pair:
    prompt: tuple[int, ...]
    chosen: tuple[int, ...]      # answer tokens, EOD included
    rejected: tuple[int, ...]


@dataclass
class PairStats:
    records: int = 0
    bad: Counter = field(default_factory=Counter)      # malformed: reason -> count
    skipped: Counter = field(default_factory=Counter)  # usable records not trained: reason -> count
    truncated: int = 0
    first_bad: list = field(default_factory=list)

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        why = ", ".join(f"{n} {r}" for r, n in self.skipped.most_common()) or "none"
        return (f"{self.records} records: {self.records - skipped - sum(self.bad.values())} pairs, "
                f"{self.truncated} truncated, skipped {skipped} ({why}), malformed "
                f"{sum(self.bad.values())}")


# ---------------------------------------------------------------- rendering
def _is_messages(v) -> bool:
    return isinstance(v, list)


def _common_prefix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _turns_text(turns, roles: Roles) -> str:
    if not isinstance(turns, list):
        raise RecordError("messages is not a list")
    parts = []
    for t in turns:
        if not isinstance(t, dict) or "role" not in t or "content" not in t:
            raise RecordError("a message lacks 'role' or 'content'")
        parts += [text for text, _ in _turn_segments(_string(t["role"], "role"),
                                                     _string(t["content"], "content"), roles)]
    return "".join(parts)


def _answer_text(answer, roles: Roles, what: str) -> str:
    """' {a}\\n\\n' for a string; for messages, their rendering without the first 'Assistant:'
    (which ends the prompt)."""
    if isinstance(answer, str):
        return f" {answer}\n\n"
    if not answer or not isinstance(answer[0], dict) or str(answer[0].get("role", "")).lower() \
            not in ("assistant", "gpt", "bot", "model"):
        raise RecordError(f"{what} must start with an assistant message")
    return _turns_text(answer, roles)[len(f"{roles.assistant}:"):]


def render_record(record, roles: Roles = Roles()) -> tuple[str, str, str]:
    """(prompt text, chosen text, rejected text) of one record; RecordError when malformed."""
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    for key in ("chosen", "rejected"):
        if key not in record:
            raise RecordError(f"missing {key!r}")
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if prompt is None:
        if not (_is_messages(chosen) and _is_messages(rejected)):
            raise RecordError("missing 'prompt' (only message-list answers may leave it implicit)")
        n = _common_prefix(chosen, rejected)
        while n and str(chosen[n - 1].get("role", "")).lower() in ("assistant", "gpt", "bot", "model"):
            n -= 1   # the prompt ends before the answers' first assistant turn
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    system = record.get("system")
    head = _turns_text([{"role": "system", "content": system}], roles) if system is not None else ""
    if isinstance(prompt, str):
        body = _turns_text([{"role": "user", "content": prompt}], roles)
    elif _is_messages(prompt) and prompt:
        body = _turns_text(prompt, roles)
    else:
        raise RecordError("'prompt' is neither a string nor a non-empty message list")
    prompt_text = f"{head}{body}{roles.assistant}:"
    return prompt_text, _answer_text(chosen, roles, "chosen"), _answer_text(rejected, roles, "rejected")


# ---------------------------------------------------------------- truncation
def fit_pair(prompt: list[int], chosen: list[int], rejected: list[int], ctx_len: int):
    """(prompt, chosen, rejected, truncated?) within ctx_len + 1 tokens each (module docstring)."""
    room = ctx_len + 1
    longest = max(len(chosen), len(rejected))
    if len(prompt) + longest <= room:
        return prompt, chosen, rejected, False
    keep = min(len(prompt), max(room - longest, room // 2))
    prompt = prompt[len(prompt) - keep:]
    return prompt, chosen[:room - keep], rejected[:room - keep], True


# ---------------------------------------------------------------- reading
def load_records(path: str) -> list[tuple[int, object]]:
    """[(line or index, parsed record or a RecordError)] of a jsonl / json / parquet file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"preference data file not found: {p}")
    if p.suffix.lower() in (".json", ".parquet"):
        from .readers import _load_records
        return list(enumerate(_load_records(p), start=1))
    out = []
    with open(p, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                out.append((n, json.loads(raw)))
            except ValueError:
                out.append((n, RecordError("not valid JSON")))
    return out


def read_pairs(path: str, ctx_len: int, roles: Roles = Roles(), max_bad_fraction: float = 0.01,
               vocab_size: int = 65536, what: str = "--data_file") -> tuple[list[Pair], PairStats]:
    """Every usable pair of a file, tokenized and truncated (module docstring); UserError for a
    file with no pairs or too many malformed records."""
    from .tokenizer import WorldTokenizer
    stats, texts = PairStats(), []
    for n, rec in load_records(path):
        stats.records += 1
        try:
            if isinstance(rec, RecordError):
                raise rec
            texts.append(render_record(rec, roles))
        except RecordError as e:
            stats.bad[str(e)] += 1
            stats.first_bad = (stats.first_bad + [n])[:5]
    _check_bad(stats, path, max_bad_fraction, what)
    tok = WorldTokenizer()
    pairs = []
    for prompt, chosen, rejected in texts:
        if chosen == rejected:
            stats.skipped["identical chosen and rejected"] += 1
            continue
        p, c, r, cut = fit_pair(tok.encode(prompt), tok.encode(chosen) + [EOD],
                                tok.encode(rejected) + [EOD], ctx_len)
        if c == r:
            stats.skipped["identical after truncation to ctx_len"] += 1
            continue
        stats.truncated += cut
        pairs.append(Pair(tuple(p), tuple(c), tuple(r)))
    if not pairs:
        raise UserError(f"{what} {path} has no usable preference pair ({stats.summary()})")
    top = max(max(p.prompt + p.chosen + p.rejected) for p in pairs)
    if top >= vocab_size:
        raise UserError(f"token id {top} of {path} is outside the model's vocabulary (0..{vocab_size - 1}); "
                        f"preference data is tokenized with the World tokenizer (vocabulary 65536)")
    return pairs, stats


def _check_bad(stats: PairStats, path: str, max_bad_fraction: float, what: str) -> None:
    bad = sum(stats.bad.values())
    if not bad:
        return
    why = ", ".join(f"{c} {r}" for r, c in stats.bad.most_common(3))
    where = f"first at record {', '.join(map(str, stats.first_bad))}"
    if bad == stats.records:
        raise UserError(f"{what} {path}: no record is a preference pair ({why}; {where}); "
                        f"preference objectives need \"prompt\", \"chosen\" and \"rejected\" fields")
    if bad / stats.records > max_bad_fraction:
        raise UserError(f"{bad} of {stats.records} records in {path} are malformed ({why}; {where}), "
                        f"more than max_bad_fraction={max_bad_fraction}; fix them or raise --max_bad_fraction")


# ---------------------------------------------------------------- dataset and batches
def collate_pairs(pairs: list[Pair]) -> dict:
    """A micro-batch of pairs. Full sequences (TRL's layout, rows [chosen..., rejected...]):
    `input_ids`/`targets`/`mask` (2B, T), mask 1 on answer targets; `prompt_len` (B,);
    the pieces for the shared-prompt forward: `prompts` (list of B LongTensors), `answers`
    (2B, L) right-padded answer tokens, `answer_len` (2B,). `real_tokens` for the step metrics."""
    seqs = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    plen = [len(p.prompt) for p in pairs] * 2
    T = max(len(s) for s in seqs) - 1
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    tgt = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T)
    for i, s in enumerate(seqs):
        t = torch.tensor(s)
        ids[i, :len(s) - 1], tgt[i, :len(s) - 1] = t[:-1], t[1:]
        mask[i, plen[i] - 1:len(s) - 1] = 1.0
    answers = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    L = max(len(a) for a in answers)
    ans = torch.zeros(len(answers), L, dtype=torch.long)
    for i, a in enumerate(answers):
        ans[i, :len(a)] = torch.tensor(a)
    return {"input_ids": ids, "targets": tgt, "mask": mask,
            "prompt_len": torch.tensor([len(p.prompt) for p in pairs]),
            "prompts": [torch.tensor(p.prompt) for p in pairs], "answers": ans,
            "answer_len": torch.tensor([len(a) for a in answers]),
            "real_tokens": torch.tensor(sum(len(s) - 1 for s in seqs))}


class PairDataset(torch.utils.data.Dataset):
    """epoch_steps x micro_bsz x world pairs per epoch; pair i of epoch e is a pure function of
    (seed, e, i): the pairs in a seeded order per pass, passes end to end (as --dataload pad)."""

    def __init__(self, pairs: list[Pair], stats: PairStats, samples_per_epoch: int, seed: int):
        self.pairs, self.stats = pairs, stats
        self.n, self.seed, self.epoch = samples_per_epoch, max(seed, 0), 0
        self._cached = (-1, None)   # (pass, its order): consecutive samples share a pass

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self, p: int) -> np.ndarray:
        if self._cached[0] != p:
            self._cached = (p, np.random.default_rng([self.seed, p]).permutation(len(self.pairs)))
        return self._cached[1]

    def __getitem__(self, i: int) -> Pair:
        g = self.epoch * self.n + int(i)
        p, pos = divmod(g, len(self.pairs))
        return self.pairs[int(self._order(p)[pos])]

    def collate(self, pairs: list[Pair]) -> dict:
        return collate_pairs(pairs)

    def summary(self) -> str:
        return f"preference data: {self.stats.summary()}; one pass = {len(self.pairs)} pairs"
