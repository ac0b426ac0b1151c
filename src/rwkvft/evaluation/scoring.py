"""Log-likelihoods and generation over an RWKV model, in token ids (no lm-eval needed here).

The RNN advantage: a context is a state. Requests that share a context (a multiple-choice
question and its k answers) run the context once and continue every answer from a copy of the
state after it; rolling log-likelihood walks a long document window by window carrying the state,
so no token is read twice. The plain path (`shared=False`) runs each context + continuation in
one pass, as a transformer harness would; both give the same numbers (the recurrence is exact).

`Counter` records the tokens each path pushed through the model, so a run can report both.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

# tokens whose logits one rolling call computes at most (2048 x 65536 fp32 = 0.5 GiB)
LOGIT_TOKENS = 2048


@dataclass
class Counter:
    """Tokens run through the model, split by why (context, continuation, rolling, generated)."""
    tokens: dict = field(default_factory=lambda: {"context": 0, "continuation": 0,
                                                   "rolling": 0, "generated": 0})

    plain: int = 0   # what the plain path would run for the same log-likelihood requests

    def add(self, kind: str, n: int) -> None:
        self.tokens[kind] += int(n)

    @property
    def total(self) -> int:
        return sum(self.tokens.values())


def select_state(state, index: torch.Tensor):
    """Rows `index` of a batched state (copies: the model never writes into them in place)."""
    return [tuple(t.index_select(0, index) for t in layer) for layer in state]


def pick(t: torch.Tensor, positions):
    """t (B, T, ...) at `positions`: None = all, a slice, or a (B, W) tensor of per-row indices."""
    if positions is None:
        return t
    if isinstance(positions, slice):
        return t[:, positions]
    index = positions.to(t.device)
    return t.gather(1, index.view(*index.shape, *([1] * (t.dim() - 2))).expand(*index.shape, *t.shape[2:]))


def _pad(rows: list[list[int]], device) -> torch.Tensor:
    """Right padding with token 0: a causal RNN's outputs before the padding do not see it."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


def _logprobs(logits: torch.Tensor, targets: list[list[int]]):
    """(sum of log-softmax at the targets, all targets greedy) per row; logits (B, T, V)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for i, tgt in enumerate(targets):
        t = torch.tensor(tgt, dtype=torch.long, device=logits.device)
        rows = logp[i, :len(tgt)]
        out.append((float(rows.gather(-1, t[:, None]).sum()), bool((rows.argmax(-1) == t).all())))
    return out


class Scorer:
    """Scores (context ids, continuation ids) pairs and documents with `model` (an RWKV7/6/5
    module: forward_features, head, state contract of `model(idx, state, return_state=True)`)."""

    def __init__(self, model, device, batch_size: int = 8, window: int = 2048):
        self.model, self.device = model, torch.device(device)
        self.batch_size, self.window = int(batch_size), int(window)
        self.counter = Counter()

    def _run(self, idx: torch.Tensor, state=None, positions=None):
        """Logits at `positions` (see pick) and the state after idx's last column. The head
        runs only where logits are read (a 65536-wide head over every prompt token would
        cost more than the model)."""
        h, new_state = self.model.forward_features(idx, state)
        return self.model.head(pick(h, positions)), new_state

    # ---------------------------------------------------------------- log-likelihood
    def loglikelihood(self, pairs: list[tuple[list[int], list[int]]], shared: bool = True,
                      progress=None) -> list[tuple[float, bool]]:
        """(log p(continuation | context), greedy?) per pair; contexts must be non-empty."""
        with torch.no_grad():
            return (self._shared if shared else self._plain)(pairs, progress or (lambda n: None))

    def _plain(self, pairs, progress):
        results: list = [None] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        for b in range(0, len(order), self.batch_size):
            ids = order[b:b + self.batch_size]
            rows = [pairs[i][0] + pairs[i][1][:-1] for i in ids]
            targets = [pairs[i][1] for i in ids]
            width = max(len(t) for t in targets)
            # each row's predictions for its continuation start at its own context end
            # (rows shorter than the widest continuation read a clamped, ignored position)
            where = torch.tensor([[min(len(pairs[i][0]) - 1 + j, len(r) - 1) for j in range(width)]
                                  for i, r in zip(ids, rows)])
            picked, _ = self._run(_pad(rows, self.device), positions=where)
            for i, r in zip(ids, _logprobs(picked, targets)):
                results[i] = r
            self.counter.add("context", sum(len(pairs[i][0]) for i in ids))
            self.counter.add("continuation", sum(len(pairs[i][1]) - 1 for i in ids))
            self.counter.plain += sum(len(pairs[i][0]) + len(pairs[i][1]) - 1 for i in ids)
            progress(len(ids))
        return results

    def _shared(self, pairs, progress):
        groups: dict[tuple, list[int]] = {}
        for i, (ctx, _) in enumerate(pairs):
            groups.setdefault(tuple(ctx), []).append(i)
        # contexts of one length run as one batch (an RNN state cannot be read mid-row)
        by_len: dict[int, list[tuple]] = {}
        for ctx in groups:
            by_len.setdefault(len(ctx), []).append(ctx)
        results: list = [None] * len(pairs)
        self.counter.plain += sum(len(c) + len(x) - 1 for c, x in pairs)
        for n in sorted(by_len, reverse=True):
            ctxs = by_len[n]
            for b in range(0, len(ctxs), self.batch_size):
                batch = ctxs[b:b + self.batch_size]
                last, state = self._run(torch.tensor(batch, dtype=torch.long, device=self.device),
                                        positions=slice(-1, None))
                self.counter.add("context", n * len(batch))
                members = [(k, i) for k, c in enumerate(batch) for i in groups[c]]
                self._continue(pairs, members, last, state, results)
                progress(len(members))
        return results

    def _continue(self, pairs, members, last, state, results) -> None:
        """Score each continuation from a copy of its context's state and last logits."""
        for b in range(0, len(members), self.batch_size):
            chunk = members[b:b + self.batch_size]
            rows = torch.tensor([k for k, _ in chunk], device=self.device)
            targets = [pairs[i][1] for _, i in chunk]
            logits = last.index_select(0, rows)                      # predicts token 0
            tails = [t[:-1] for t in targets]
            if max(len(t) for t in tails) > 0:
                more, _ = self._run(_pad([t or [0] for t in tails], self.device),
                                    select_state(state, rows))
                logits = torch.cat([logits, more], dim=1)
                self.counter.add("continuation", sum(len(t) for t in tails))
            for (_, i), r in zip(chunk, _logprobs(logits, targets)):
                results[i] = r

    # ---------------------------------------------------------------- rolling
    def rolling(self, docs: list[list[int]], prefix: int = 0, progress=None) -> list[float]:
        """log p(doc | prefix token) per document, window by window with the state carried
        (each token read once; the model's memory, not a window, bounds the context)."""
        progress = progress or (lambda n: None)
        results = [0.0] * len(docs)
        order = sorted(range(len(docs)), key=lambda i: -len(docs[i]))
        with torch.no_grad():
            for b in range(0, len(order), self.batch_size):
                ids = [i for i in order[b:b + self.batch_size] if docs[i]]
                seqs = [[prefix] + docs[i] for i in ids]
                state, start = None, 0
                while seqs and start < len(seqs[0]) - 1:
                    # documents sorted longest first: the ones still going are a prefix
                    live = sum(1 for s in seqs if len(s) - 1 > start)
                    if state is not None and live < len(state[0][0]):
                        state = select_state(state, torch.arange(live, device=self.device))
                    # the window shrinks with the batch so the (tokens x vocab) logits stay small
                    step = max(1, min(self.window, LOGIT_TOKENS // live))
                    inputs = [s[start:min(start + step, len(s) - 1)] for s in seqs[:live]]
                    targets = [s[start + 1:start + 1 + len(x)] for s, x in zip(seqs, inputs)]
                    logits, state = self._run(_pad(inputs, self.device), state)
                    self.counter.add("rolling", sum(len(x) for x in inputs))
                    for k, (lp, _) in enumerate(_logprobs(logits, targets)):
                        results[ids[k]] += lp
                    start += step
                progress(len(order[b:b + self.batch_size]))
        return results

    # ---------------------------------------------------------------- generation
    def generate(self, prompts: list[list[int]], settings: list[dict], decode, progress=None) -> list[str]:
        """Text continuing each prompt. settings[i]: until (stop strings), max_tokens,
        temperature (0 = greedy), top_p, seed. Stops at a stop string (cut before it), at
        max_tokens or at token 0 (end of text). Prompts run one by one; decoding steps batched."""
        progress = progress or (lambda n: None)
        out: list[str] = [""] * len(prompts)
        with torch.no_grad():
            for b in range(0, len(prompts), self.batch_size):
                ids = list(range(b, min(b + self.batch_size, len(prompts))))
                for i, text in zip(ids, self._generate_batch([prompts[i] for i in ids],
                                                             [settings[i] for i in ids], decode)):
                    out[i] = text
                progress(len(ids))
        return out

    def _generate_batch(self, prompts, settings, decode) -> list[str]:
        from ..generation import sample  # the sampler `rwkvft generate` uses
        lasts, states = [], []
        for p in prompts:
            last, state = self._run(torch.tensor([p], device=self.device), positions=slice(-1, None))
            lasts.append(last[:, 0])
            states.append(state)
            self.counter.add("context", len(p))
        logits = torch.cat(lasts)
        state = [tuple(torch.cat([s[layer][j] for s in states]) for j in range(len(states[0][layer])))
                 for layer in range(len(states[0]))]
        gens = [torch.Generator().manual_seed(int(s.get("seed", 0))) for s in settings]
        made: list[list[int]] = [[] for _ in prompts]
        live = [i for i, s in enumerate(settings) if s["max_tokens"] > 0]
        rows = list(range(len(prompts)))                 # row of each live request in `state`
        while live:
            step = []
            for i in live:
                s = settings[i]
                tok = sample(logits[rows[i]].float(), s["temperature"], s["top_p"], gens[i])
                if tok == 0:
                    continue
                made[i].append(tok)
                if len(made[i]) < s["max_tokens"] and not _stopped(decode(made[i]), s["until"]):
                    step.append(i)
            live = step
            if not live:
                break
            index = torch.tensor([rows[i] for i in live], device=self.device)
            idx = torch.tensor([[made[i][-1]] for i in live], device=self.device)
            logits, state = self._run(idx, select_state(state, index))
            logits = logits[:, 0]
            rows = {i: k for k, i in enumerate(live)}
            self.counter.add("generated", len(live))
        return [_cut(decode(m), s["until"]) for m, s in zip(made, settings)]


def _stopped(text: str, until: list[str]) -> bool:
    return any(u and u in text for u in until)


def _cut(text: str, until: list[str]) -> str:
    """The text before the earliest stop string (lm-eval's convention: the stop is not returned)."""
    cut = min((text.find(u) for u in until if u and u in text), default=len(text))
    return text[:cut]
