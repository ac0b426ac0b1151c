"""`rwkvft data`: what the model will learn from a data file, before any GPU time is spent.

Totals (documents, tokens, trained tokens, skips, lengths against ctx_len) come from the corpus
that training reads (`datasets.read_data` with the same DataConfig), so they equal the run log's.
The per-record view and the lint re-read the records one by one with the same parser, template
and tokenizer (`formats.record_segments`, one tokenization per segment, EOD appended).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .conversation import RecordError, conversation
from .datasets import DataConfig, read_data, responses_only
from .formats import Roles, record_segments
from .tokenizer import EOD

RECORD_TYPES = ("jsonl", "sft", "hf")
PERCENTILES = (50, 90, 99)


@dataclass
class RecordView:
    number: int                   # line number (jsonl) or row number from 1
    segments: list                # [(text, trained)]
    tokens: int                   # with the EOD
    trained: int


@dataclass
class Preview:
    source: str
    totals: dict
    shown: list = field(default_factory=list)     # RecordView
    lint: list = field(default_factory=list)      # (record number, message)


def iter_records(cfg: DataConfig):
    """(number, record or None, error) for each record of a record-holding file."""
    p = Path(cfg.data_file)
    if cfg.data_type == "hf":
        from .hf_datasets import load_records
        yield from ((n, r, None) for n, r in enumerate(load_records(cfg.data_file, cfg.data_split,
                                                                     cfg.data_config), start=1))
    elif cfg.data_type == "jsonl" or p.suffix.lower() in (".jsonl", ".ndjson"):
        with open(p, "rb") as f:
            for n, raw in enumerate(f, start=1):
                if raw.strip():
                    try:
                        yield n, json.loads(raw), None
                    except ValueError:
                        yield n, None, "invalid JSON"
    else:
        from .readers import _load_records
        yield from ((n, r, None) for n, r in enumerate(_load_records(p), start=1))


def _roles(cfg: DataConfig) -> Roles:
    return Roles(cfg.user_role, cfg.assistant_role, cfg.system_role, cfg.chat_template, cfg.train_on_think)


def _lint_conversation(record, cfg: DataConfig) -> list[str]:
    """Mistakes in the record itself (chat_templates.md §1, §2, §5): "\\n\\n" inside a turn, empty replies."""
    conv = conversation(record, cfg.text_field, tuple(cfg.sft_field) if cfg.sft_field else None)
    if isinstance(conv, str):
        return []
    out = []
    for i, m in enumerate(conv.messages, start=1):
        if "\n\n" in m.content.replace("\r\n", "\n"):
            fix = "raw keeps it: the model learns to end its turn there" if cfg.chat_template == "raw" \
                else f"{cfg.chat_template} writes it as one line break"
            out.append(f"message {i} ({m.role}) holds a blank line ('\\n\\n' ends a turn; {fix})")
        if m.role == "assistant" and not m.content.strip() and not m.tool_calls and not (m.think or "").strip():
            out.append(f"message {i} is an empty reply")
    return out


def _lint_rendered(text: str, tokens: int, cfg: DataConfig) -> list[str]:
    out = []
    if text.count("<think") != text.count("</think"):
        out.append(f"unbalanced think tags: {text.count('<think')} '<think' and {text.count('</think')} "
                   f"'</think' (a model trained on it may never close its think block)")
    if tokens > cfg.ctx_len + 1:
        how = "split into several samples" if cfg.long_docs == "split" else "cut"
        out.append(f"{tokens} tokens, longer than ctx_len+1 = {cfg.ctx_len + 1}: it will be {how}")
    return out


def _view(number: int, record, cfg: DataConfig, tok, resp_only: bool) -> tuple[RecordView, list[str]]:
    segs, has_roles = record_segments(record, _roles(cfg), cfg.text_field,
                                      tuple(cfg.sft_field) if cfg.sft_field else None)
    lengths = [len(tok.encode(text)) for text, _ in segs]
    eod = 1 if cfg.append_eod else 0
    tokens = sum(lengths) + eod
    if has_roles and resp_only:  # as datasets.trained_mask: replies + EOD of records with roles
        trained = sum(n for n, (_, t) in zip(lengths, segs) if t) + eod
    else:
        trained = tokens
    if cfg.append_eod:
        segs = segs + [("\x00", True)]
    lint = _lint_conversation(record, cfg) + _lint_rendered("".join(t for t, _ in segs), tokens, cfg)
    return RecordView(number, segs, tokens, trained), lint


def _corpus_totals(cfg: DataConfig, corpus) -> dict:
    lengths = np.diff(corpus.offsets)
    tokens = int(len(corpus.tokens))
    trained = int(corpus.mask.sum()) if responses_only(cfg, corpus) and corpus.mask is not None else tokens
    pct = {f"p{q}": int(np.percentile(lengths, q)) for q in PERCENTILES} if len(lengths) else {}
    return {"records": corpus.stats.records or corpus.n_docs, "documents": corpus.n_docs,
            "skipped": corpus.stats.bad, "skipped_by_reason": dict(corpus.stats.reasons),
            "tokens": tokens, "trained_tokens": trained,
            "trained_fraction": round(trained / tokens, 4) if tokens else 0.0,
            "lengths": {**pct, "max": int(lengths.max()) if len(lengths) else 0},
            "ctx_len": cfg.ctx_len, "longer_than_ctx_len": int((lengths > cfg.ctx_len + 1).sum()),
            "loss_mask": cfg.loss_mask if cfg.loss_mask != "auto" else
            ("auto -> qa" if corpus.mask is not None else "auto -> none"),
            "chat_template": cfg.chat_template}


def _plain_views(corpus, n: int, tok) -> list[RecordView]:
    """Data without records (text, binidx, numpy): the first documents, every token trained."""
    out = []
    for d in range(min(n, corpus.n_docs)):
        ids = [int(x) for x in corpus.tokens[corpus.offsets[d]:corpus.offsets[d + 1]]]
        text = tok.decode([i for i in ids if i != EOD]) + ("\x00" if ids and ids[-1] == EOD else "")
        out.append(RecordView(d + 1, [(text, True)], len(ids), len(ids)))
    return out


def preview(cfg: DataConfig, show: int = 3, sample: int = 0, seed: int = 0) -> Preview:
    """Totals of the training corpus, `show` first (or `sample` random) records rendered, and the lint."""
    from .tokenizer import WorldTokenizer
    tok = WorldTokenizer()
    corpus = read_data(cfg)
    result = Preview(corpus.source, _corpus_totals(cfg, corpus))
    if cfg.data_type not in RECORD_TYPES:
        result.shown = _plain_views(corpus, sample or show, tok)
        return result
    views = []
    for number, record, error in iter_records(cfg):
        if error:
            result.lint.append((number, f"skipped: {error}"))
            continue
        try:
            view, lint = _view(number, record, cfg, tok, responses_only(cfg, corpus))
        except RecordError as e:
            result.lint.append((number, f"skipped: {e}"))
            continue
        views.append(view)
        result.lint += [(number, msg) for msg in lint]
    if sample:
        result.shown = sorted(random.Random(seed).sample(views, min(sample, len(views))), key=lambda v: v.number)
    else:
        result.shown = views[:show]
    return result


# ---------------------------------------------------------------- preference pairs
@dataclass
class PairView:
    number: int                   # record number
    prompt: str                   # texts of the tokens training reads (after truncation)
    chosen: str
    rejected: str
    tokens: dict                  # prompt / chosen / rejected token counts (answers with the EOD)


def looks_like_pairs(cfg: DataConfig) -> bool:
    """The first parsable record of a record file has "chosen" and "rejected"."""
    if cfg.data_type not in ("jsonl", "sft"):
        return False
    for _, record, error in iter_records(cfg):
        if not error:
            return isinstance(record, dict) and "chosen" in record and "rejected" in record
    return False


def _pair_view(pair, tok) -> PairView:
    def text(ids):
        return tok.decode([i for i in ids if i != EOD]) + ("\x00" if ids and ids[-1] == EOD else "")
    return PairView(pair.record, text(pair.prompt), text(pair.chosen), text(pair.rejected),
                    {"prompt": len(pair.prompt), "chosen": len(pair.chosen), "rejected": len(pair.rejected)})


def preview_pairs(cfg: DataConfig, show: int = 3, sample: int = 0, seed: int = 0) -> Preview:
    """What a preference run reads (data/preference.py `read_pairs`, the same rendering and
    truncation): totals, skips by reason, and `show` first (or `sample` random) pairs."""
    from .preference import read_pairs
    from .tokenizer import WorldTokenizer
    pairs, stats = read_pairs(cfg.data_file, cfg.ctx_len, _roles(cfg), cfg.max_bad_fraction)
    tok = WorldTokenizer()
    sums = {k: int(sum(len(getattr(p, k)) for p in pairs)) for k in ("prompt", "chosen", "rejected")}
    lengths = np.asarray([len(p.prompt) + max(len(p.chosen), len(p.rejected)) for p in pairs])
    totals = {"kind": "preference pairs", "records": stats.records, "pairs": len(pairs),
              "truncated": stats.truncated, "skipped": sum(stats.skipped.values()),
              "skipped_by_reason": dict(stats.skipped), "malformed": sum(stats.bad.values()),
              "malformed_by_reason": dict(stats.bad), "tokens": sums,
              "scored_tokens": sums["chosen"] + sums["rejected"],
              "lengths": {**{f"p{q}": int(np.percentile(lengths, q)) for q in PERCENTILES},
                          "max": int(lengths.max())},
              "ctx_len": cfg.ctx_len, "chat_template": cfg.chat_template}
    chosen = (sorted(random.Random(seed).sample(pairs, min(sample, len(pairs))), key=lambda p: p.record)
              if sample else pairs[:show])
    result = Preview(cfg.data_file, totals, [_pair_view(p, tok) for p in chosen])
    result.lint = list(stats.lines)
    return result
