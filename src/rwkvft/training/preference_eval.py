"""`rwkvft eval --pairs`: score a preference file (data/preference.py records) with the base
model and with an adapter: per model the share of pairs whose chosen answer gets the higher
log-prob and the mean log-prob margin (summed over answer tokens, as DPO's rewards are); with
both, DPO's implicit reward (beta x the adapted-minus-base log-ratio) accuracy and mean margin,
the `rewards/accuracies` and `rewards/margins` a DPO run logs on held-out pairs."""
from __future__ import annotations

import torch

from .pair_logps import shared_prompt_logps
from .preference_step import _to, concat_logps


def pair_logps(model, pairs, batch_size: int, device, head_chunk: int = 2048):
    from ..data.preference import collate_pairs
    model.eval()
    parts = []
    with torch.no_grad():
        for s in range(0, len(pairs), batch_size):
            parts.append(shared_prompt_logps(model, _to(collate_pairs(pairs[s:s + batch_size]), device),
                                             head_chunk))
    return concat_logps(parts)


def ranking(lp) -> dict:
    margin = lp.chosen - lp.rejected
    return {"accuracy": float((margin > 0).double().mean()), "margin": float(margin.mean()),
            "logps/chosen": float(lp.chosen.mean()), "logps/rejected": float(lp.rejected.mean())}


def implicit_rewards(adapted, base, beta: float) -> dict:
    c, r = beta * (adapted.chosen - base.chosen), beta * (adapted.rejected - base.rejected)
    return {"rewards/accuracies": float((c > r).double().mean()), "rewards/margins": float((c - r).mean()),
            "beta": beta}


def score_file(models, path: str, ctx_len: int, batch_size: int, device, roles, beta: float,
               max_bad_fraction: float, head_chunk: int = 2048) -> dict:
    """{label: ranking(...)} for [(label, model)], plus "rewards" when base and adapted are both there."""
    from ..data.preference import read_pairs
    vocab = min(m.config.vocab_size for _, m in models)
    pairs, stats = read_pairs(path, ctx_len, roles, max_bad_fraction, vocab, what="--data_file")
    logps, out = {}, {"pairs": len(pairs), "data": stats.summary()}
    for label, model in models:
        logps[label] = pair_logps(model.to(device), pairs, batch_size, device, head_chunk)
        out[label] = ranking(logps[label])
    if "base" in logps and "adapted" in logps:
        out["rewards"] = implicit_rewards(logps["adapted"], logps["base"], beta)
    return out
