"""Text generation: the one decoding loop (`rwkvft generate`, --sample_prompts, the demo).

The prompt goes through the model in one parallel pass; each new token then costs one RNN step
through the carried state (no re-reading of the prompt).
"""
from __future__ import annotations

import contextlib

import torch

from .errors import UserError


def require_world_vocab(vocab_size: int, who: str, what: str) -> None:
    """Decoding text needs the World tokenizer's vocabulary."""
    from .data.tokenizer import WorldTokenizer
    world = WorldTokenizer.vocab_size
    if vocab_size != world:
        raise UserError(f"{who} needs a World-vocabulary model (vocab {world}); "
                        f"{what} has vocab {vocab_size}")


def sample(logits, temperature: float, top_p: float, generator):
    """One token id from logits (V,): greedy at temperature 0, else nucleus sampling."""
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
                  top_p: float = 0.85, seed: int = 0, device="cpu", forward_context=None):
    """Yield (token_id, logits it was sampled from) until max_tokens or token 0 (end of text).
    `forward_context`: e.g. the trainer's autocast, around every forward."""
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad(), (forward_context or contextlib.nullcontext)():
        # one parallel pass over the prompt; then one RNN step per token through the state
        # (the WKV dispatcher runs one-token calls through the plain recurrence)
        logits, state = model(torch.tensor([prompt_ids], device=device), return_state=True)
        for _ in range(max_tokens):
            last = logits[0, -1]
            token = sample(last.float(), temperature, top_p, gen)
            if token == 0:
                return
            yield token, last
            logits, state = model(torch.tensor([[token]], device=device), state, return_state=True)


def greedy(model, ids: list[int], max_tokens: int, device="cpu", forward_context=None) -> list[int]:
    """The greedy continuation of `ids` (stops at the end-of-text token 0)."""
    return [t for t, _ in stream_tokens(model, ids, max_tokens, temperature=0.0, device=device,
                                        forward_context=forward_context)]


def generate(model, prompt: str, max_tokens: int = 100, temperature: float = 1.0,
             top_p: float = 0.85, seed: int = 0, adapter=None, state=None,
             lora_alpha: float | None = None, op: str = "chunked", device: str = "cpu",
             out=None) -> str:
    """Continue `prompt` with `model` (a checkpoint path, or a model from assemble_model);
    the text is streamed to `out` (a file object) as it is decoded, and returned. `device`:
    cpu, cuda or cuda:N (fp32 weights)."""
    from .assembly import assemble_model
    from .data.tokenizer import WorldTokenizer
    from .hardware import resolve_device
    hw = resolve_device(device, "fp32", flag="--device")
    tokenizer = WorldTokenizer()
    what = model if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__") else "the model"
    if not isinstance(model, torch.nn.Module):
        model = assemble_model(model, adapter=adapter, state=state, lora_alpha=lora_alpha,
                               device=hw.device)
    elif adapter is not None or state is not None:
        raise TypeError("adapter/state go with a checkpoint path; for a model object, assemble "
                        "it with rwkvft.load_model(path, adapter=..., state=...) first")
    model.to(hw.device).set_runtime(op=op)
    require_world_vocab(model.config.vocab_size, "generate", str(what))
    # an empty prompt starts from the end-of-document token, as a fresh document would
    prompt_ids = tokenizer.encode(prompt) or [0]
    decoder = tokenizer.stream_decoder()
    pieces = []
    for token, _ in stream_tokens(model, prompt_ids, max_tokens, temperature, top_p, seed,
                                  device=hw.device):
        pieces.append(decoder.push(token))
        _write(out, pieces[-1])
    pieces.append(decoder.flush())
    _write(out, pieces[-1])
    return "".join(pieces)


def _write(out, text: str) -> None:
    if out is not None:
        out.write(text)
        out.flush()


def check_prompt(prompt: str) -> None:
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:  # argv bytes that are not UTF-8 arrive as lone surrogates
        raise UserError(f"--prompt is not valid UTF-8 text (a byte that is not UTF-8 at "
                        f"character {e.start}); pass the prompt in UTF-8") from None
