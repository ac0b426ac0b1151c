"""Token generation shared by `rwkvft generate`, the demo and lm-eval's generate_until: the
sampler and the prompt-then-one-token-at-a-time loop through the recurrent state."""
from __future__ import annotations


def sample(logits, temperature: float, top_p: float, generator):
    """One token id from logits (V,): greedy at temperature 0, else nucleus sampling."""
    import torch
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_p, order = torch.sort(probs, descending=True)
    # keep the smallest prefix whose mass reaches top_p (the token that crosses it included)
    keep = (torch.cumsum(sorted_p, dim=-1) - sorted_p) < top_p
    sorted_p = sorted_p * keep
    choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)
    return int(order[choice])


def stream_tokens(model, prompt_ids: list[int], max_tokens: int, temperature: float = 1.0,
                  top_p: float = 0.85, seed: int = 0):
    """Yield (token_id, logits it was sampled from) until max_tokens or token 0 (end of text)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # one parallel pass over the prompt; then one RNN step per token through the state
        # (the WKV dispatcher runs one-token calls through the plain recurrence)
        logits, state = model(torch.tensor([prompt_ids]), return_state=True)
        for _ in range(max_tokens):
            last = logits[0, -1]
            token = sample(last, temperature, top_p, gen)
            if token == 0:
                return
            yield token, last
            logits, state = model(torch.tensor([[token]]), state, return_state=True)
