"""Preference pairs (prompt, chosen, rejected) for --objective dpo|orpo|simpo and `rwkvft eval`.

Records (jsonl, or a .json list / .parquet), TRL's column names (spec preference_tuning.md §7):
- standard:        {"prompt": str, "chosen": str, "rejected": str}
- conversational:  {"prompt": [messages], "chosen": [messages], "rejected": [messages]}; the prompt
                   may be many turns (system/user/assistant), the answers are assistant turns
                   (think fields and tool calls as in SFT records, data/conversation.py)
- implicit prompt: {"chosen": [messages], "rejected": [messages]}: the prompt is the longest
                   common run of leading messages (TRL's extract_prompt)
Optional top-level "system" string and "tools" list, as in SFT chat records.

Rendering is SFT's, by the same chat template (`--chat_template g1|world|raw`, data/templates/):
prompt + chosen is rendered as one SFT conversation, and its segments are cut where the answer's
first trained segment starts (the prompt thus ends with "Assistant:", or "Assistant: <think" for a
g1 think reply). Each segment is tokenized on its own, as SFT does, so the token ids of prompt +
chosen + EOD are exactly SFT's ids of that conversation (tests/data/test_preference_data.py). Should
the chosen and rejected renderings give the prompt different tokens (one reply thinks, the other
does not), the shared prompt is their common token prefix and the rest belongs to each answer.
Everything after the prompt is scored, EOD included (tool-output turns inside an answer too).

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
from .conversation import ASSISTANT, RecordError, conversation
from .formats import Roles
from .templates import get_template
from .tokenizer import EOD


@dataclass(frozen=True)
class Pair:
    prompt: tuple[int, ...]
    chosen: tuple[int, ...]      # answer tokens, EOD included
    rejected: tuple[int, ...]
    record: int = 0              # line (jsonl) or row number of the record, from 1
    # the reference model's summed answer log-probs (chosen, rejected) from `rwkvft prepare
    # --ref_logps` (training/ref_logps.py); None: the reference runs during training
    ref: tuple[float, float] | None = None


@dataclass
class PairStats:
    records: int = 0
    bad: Counter = field(default_factory=Counter)      # malformed: reason -> count
    skipped: Counter = field(default_factory=Counter)  # usable records not trained: reason -> count
    truncated: int = 0
    first_bad: list = field(default_factory=list)
    lines: list = field(default_factory=list)          # (record number, why) of every record not trained

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        why = ", ".join(f"{n} {r}" for r, n in self.skipped.most_common()) or "none"
        return (f"{self.records} records: {self.records - skipped - sum(self.bad.values())} pairs, "
                f"{self.truncated} truncated, skipped {skipped} ({why}), malformed "
                f"{sum(self.bad.values())}")


def pair_roles(cfg) -> Roles:
    """The rendering options of a TrainConfig (or anything with its chat fields)."""
    return Roles(cfg.user_role, cfg.assistant_role, cfg.system_role, cfg.chat_template,
                 bool(cfg.train_on_think))


# ---------------------------------------------------------------- rendering
def _is_assistant(message) -> bool:
    return isinstance(message, dict) and str(message.get("role", "")).lower() in ASSISTANT


def _common_prefix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _messages(value, what: str) -> list:
    if isinstance(value, str):
        return [{"role": "user" if what == "prompt" else "assistant", "content": value}]
    if not isinstance(value, list) or not value:
        if what == "prompt":
            raise RecordError("'prompt' is neither a string nor a non-empty message list")
        raise RecordError(f"{what} is neither a string nor a message list")
    if what != "prompt" and not _is_assistant(value[0]):
        raise RecordError(f"{what} must start with an assistant message")
    return value


def _split_prompt(record) -> tuple[list, list, list]:
    """(prompt, chosen, rejected) message lists of a record (module docstring)."""
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    for key in ("chosen", "rejected"):
        if record.get(key) is None:
            raise RecordError(f"missing {key!r}")
    chosen, rejected, prompt = record["chosen"], record["rejected"], record.get("prompt")
    if prompt is None:
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise RecordError("missing 'prompt' (only message-list answers may leave it implicit)")
        n = _common_prefix(chosen, rejected)
        while n and _is_assistant(chosen[n - 1]):
            n -= 1   # the prompt ends before the answers' first assistant turn
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    return _messages(prompt, "prompt"), _messages(chosen, "chosen"), _messages(rejected, "rejected")


def _segments(record, messages: list, roles: Roles):
    conv = conversation({"messages": messages, "system": record.get("system"), "tools": record.get("tools")})
    return get_template(roles.template).render(conv, roles)


def _cut(full, prompt_text: str):
    """(prompt segments, answer segments) of a conversation's segments: the prompt is everything
    before the first trained segment that starts at or after the end of `prompt_text`."""
    if not "".join(t for t, _ in full).startswith(prompt_text):
        raise RecordError("the chat template renders the prompt differently before an answer")
    pos = 0
    for i, (text, trained) in enumerate(full):
        if trained and pos >= len(prompt_text):
            return full[:i], full[i:]
        pos += len(text)
    raise RecordError("an answer renders to no trained text")


def render_segments(record, roles: Roles = Roles()):
    """(prompt segments, chosen answer segments, rejected answer segments) of one record, each
    [(text, trained)] as the SFT template writes them; RecordError when malformed."""
    prompt, chosen, rejected = _split_prompt(record)
    prompt_text = "".join(t for t, _ in _segments(record, prompt, roles))
    pc, c = _cut(_segments(record, prompt + chosen, roles), prompt_text)
    pr, r = _cut(_segments(record, prompt + rejected, roles), prompt_text)
    return pc, c, pr, r


def render_record(record, roles: Roles = Roles()) -> tuple[str, str, str]:
    """(prompt text, chosen text, rejected text) of one record (the chosen rendering's prompt;
    the rejected one's differs only where the replies open differently, e.g. with "<think")."""
    pc, c, _, r = render_segments(record, roles)
    text = lambda segs: "".join(t for t, _ in segs)  # noqa: E731
    return text(pc), text(c), text(r)


def encode_record(record, roles: Roles, tok) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, chosen ids + EOD, rejected ids + EOD) before truncation: every segment
    tokenized on its own, as SFT does (data/pipeline.py)."""
    pc, c, pr, r = render_segments(record, roles)
    if "".join(t for t, _ in c) == "".join(t for t, _ in r):
        raise _Identical()
    ids = tok.encode_each([t for t, _ in pc + c + pr + r])
    cuts = np.cumsum([0, len(pc), len(c), len(pr), len(r)])
    flat = [[i for piece in ids[a:b] for i in piece] for a, b in zip(cuts[:-1], cuts[1:])]
    p_c, a_c, p_r, a_r = flat
    k = _common_prefix(p_c, p_r)
    if k == 0:
        raise RecordError("chosen and rejected share no prompt token")
    return p_c[:k], p_c[k:] + a_c + [EOD], p_r[k:] + a_r + [EOD]


class _Identical(Exception):
    """A record whose chosen and rejected answers render to the same text."""


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
    get_template(roles.template)  # an unknown template is the user's error, not every record's
    tok, stats, pairs = WorldTokenizer(), PairStats(), []
    for n, rec in load_records(path):
        stats.records += 1
        try:
            if isinstance(rec, RecordError):
                raise rec
            prompt, chosen, rejected = encode_record(rec, roles, tok)
        except _Identical:
            _skip(stats, n, "identical chosen and rejected")
            continue
        except RecordError as e:
            stats.bad[str(e)] += 1
            stats.first_bad = (stats.first_bad + [n])[:5]
            stats.lines.append((n, f"malformed: {e}"))
            continue
        p, c, r, cut = fit_pair(prompt, chosen, rejected, ctx_len)
        if c == r:
            _skip(stats, n, "identical after truncation to ctx_len")
            continue
        stats.truncated += cut
        pairs.append(Pair(tuple(p), tuple(c), tuple(r), n))
    _check_bad(stats, path, max_bad_fraction, what)
    if not pairs:
        raise UserError(f"{what} {path} has no usable preference pair ({stats.summary()})")
    top = max(max(p.prompt + p.chosen + p.rejected) for p in pairs)
    if top >= vocab_size:
        raise UserError(f"token id {top} of {path} is outside the model's vocabulary (0..{vocab_size - 1}); "
                        f"preference data is tokenized with the World tokenizer (vocabulary 65536)")
    return pairs, stats


def _skip(stats: PairStats, n: int, why: str) -> None:
    stats.skipped[why] += 1
    stats.lines.append((n, f"skipped: {why}"))


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
    (2B, L) right-padded answer tokens, `answer_len` (2B,). `real_tokens` for the step metrics;
    `ref_chosen` / `ref_rejected` (B,) when the pairs carry precomputed reference log-probs."""
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
    batch = {"input_ids": ids, "targets": tgt, "mask": mask,
             "prompt_len": torch.tensor([len(p.prompt) for p in pairs]),
             "prompts": [torch.tensor(p.prompt) for p in pairs], "answers": ans,
             "answer_len": torch.tensor([len(a) for a in answers]),
             "real_tokens": torch.tensor(sum(len(s) - 1 for s in seqs))}
    if all(p.ref is not None for p in pairs):  # precomputed reference log-probs (float64: as stored)
        batch["ref_chosen"] = torch.tensor([p.ref[0] for p in pairs], dtype=torch.float64)
        batch["ref_rejected"] = torch.tensor([p.ref[1] for p in pairs], dtype=torch.float64)
    return batch


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
        ref = "; reference log-probs precomputed (--ref_logps)" if self.pairs[0].ref is not None else ""
        return f"preference data: {self.stats.summary()}; one pass = {len(self.pairs)} pairs{ref}"
