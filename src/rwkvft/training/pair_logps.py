"""Per-sequence log-probabilities of a micro-batch of preference pairs (data/preference.py).

Two ways, same numbers (tests/training/test_pair_logps.py: within 1e-5 in fp32):
- `full_sequence_logps`: every row is prompt + answer, chosen rows then rejected rows (TRL's
  layout); the prompt runs twice per pair.
- `shared_prompt_logps` (the RNN advantage, spec §1): each prompt runs once, and chosen and
  rejected continue from copies of the state it ends in (the WKV state plus both token-shift
  states), as one batch of 2B answer rows. The first answer token's log-prob comes from the
  prompt's last position. Prompts of equal length run together; each prompt length is one
  forward, so the state after a prompt never includes padding.
Log-probs are summed over answer tokens, computed through the head in chunks of tokens under
activation checkpointing like the SFT loss (training/loss.py): no (B, T, V) logits tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .preference import PairLogps


def _chunk_logps(head, h, targets):
    return -F.cross_entropy(head(h).float(), targets, reduction="none")


def token_logps(head, h: torch.Tensor, targets: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """log p(target) for each row of h (n, C), through the head in chunks of `chunk` rows."""
    use_cp = torch.is_grad_enabled() and (h.requires_grad or any(p.requires_grad for p in head.parameters()))
    out = []
    for s in range(0, h.shape[0], chunk):
        args = (h[s:s + chunk], targets[s:s + chunk])
        out.append(checkpoint(_chunk_logps, head, *args, use_reentrant=False) if use_cp
                   else _chunk_logps(head, *args))
    return torch.cat(out) if out else h.new_zeros(0, dtype=torch.float32)


def row_logps(head, h: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
              chunk: int = 2048) -> torch.Tensor:
    """(B,) sums of log p(target) over the positions where mask > 0; h (B, T, C)."""
    B, T, C = h.shape
    keep = mask.reshape(-1) > 0
    rows = torch.arange(B, device=h.device).repeat_interleave(T)[keep]
    lp = token_logps(head, h.reshape(-1, C)[keep], targets.reshape(-1)[keep], chunk)
    return torch.zeros(B, device=h.device, dtype=lp.dtype).index_add(0, rows, lp)


def _pair_logps(sums: torch.Tensor, batch: dict) -> PairLogps:
    n = batch["answer_len"].to(sums.device)
    B = n.shape[0] // 2
    chosen_n = n[:B].to(sums.dtype)
    nll = -sums[:B].sum() / chosen_n.sum().clamp(min=1)
    return PairLogps(sums[:B], sums[B:], chosen_n, n[B:].to(sums.dtype), nll)


def full_sequence_logps(model, batch: dict, head_chunk: int = 2048) -> PairLogps:
    h, _ = model.forward_features(batch["input_ids"])
    return _pair_logps(row_logps(model.head, h, batch["targets"], batch["mask"], head_chunk), batch)


def _select(state, index: torch.Tensor):
    return [tuple(t.index_select(0, index) for t in layer) for layer in state]


def _cat_states(states):
    return [tuple(torch.cat(ts, 0) for ts in zip(*layers)) for layers in zip(*states)]


def prompt_states(model, prompts: list[torch.Tensor], head_chunk: int):
    """(last hidden (B, C), state for B rows) after each prompt, one forward per prompt length."""
    device = model.head.weight.device
    by_len: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    order, lasts, states = [], [], []
    for idx in by_len.values():
        h, state = model.forward_features(torch.stack([prompts[i] for i in idx]).to(device))
        order += idx
        lasts.append(h[:, -1])
        states.append(state)
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(len(order))
    back = back.to(device)
    return torch.cat(lasts, 0).index_select(0, back), _select(_cat_states(states), back)


def shared_prompt_logps(model, batch: dict, head_chunk: int = 2048) -> PairLogps:
    answers, n = batch["answers"], batch["answer_len"]
    device = model.head.weight.device
    answers, n = answers.to(device), n.to(device)
    last, state = prompt_states(model, batch["prompts"], head_chunk)
    rows = torch.arange(len(batch["prompts"]), device=device).repeat(2)  # chosen rows, rejected rows
    first = token_logps(model.head, last.index_select(0, rows), answers[:, 0], head_chunk)
    h, _ = model.forward_features(answers, _select(state, rows))
    targets = torch.zeros_like(answers)
    targets[:, :-1] = answers[:, 1:]
    positions = torch.arange(answers.shape[1], device=device)
    mask = (positions[None, :] < (n[:, None] - 1)).float()
    return _pair_logps(first + row_logps(model.head, h, targets, mask, head_chunk), batch)
