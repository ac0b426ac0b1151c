"""Does `--compile` pay for `rwkvft eval` and `rwkvft generate`? Two copies of the same random
model in one process, one with compiled blocks (models/compile.py), timed in alternating pairs
(the order inside a pair alternates too) under torch.no_grad, as both commands run:

  * eval: forward_features over a batch of full sequences (the data-file / lm_eval path);
  * generate: a prompt prefill, then one token at a time through the RNN state (stream_tokens).

Both copies must give the same outputs / tokens: the script prints the largest differences.

    python benchmarks/bench_compile_infer.py [--size 0.1b] [--version x070] [--batch 4]
        [--ctx_len 256] [--prompt 64] [--tokens 32] [--pairs 3] [--threads N] [--json]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from rwkvft.bench import SIZES
from rwkvft.generation import stream_tokens
from rwkvft.models.build import model_from_state_dict
from rwkvft.models.compile import compile_blocks, compile_seconds
from rwkvft.models.init import new_config, random_state_dict


def _eval_pass(model, idx):
    """The blocks' part of an eval batch: the head (65536 wide, never compiled) costs both
    copies the same and is left out, so the ratio is compile's own."""
    with torch.no_grad():
        return model.forward_features(idx)[0]


def _generate(model, prompt, tokens):
    out = list(stream_tokens(model, prompt, tokens, temperature=0.0))
    return [t for t, _ in out], torch.stack([l for _, l in out])


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _pairs(eager_fn, compiled_fn, n):
    times = {"eager": [], "compiled": []}
    for i in range(n):
        order = [("eager", eager_fn), ("compiled", compiled_fn)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            times[name].append(_timed(fn)[0])
    return times


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    n_layer, n_embd = SIZES[args.size]
    cfg = new_config(n_layer, n_embd, 65536, version=args.version)
    eager = model_from_state_dict(random_state_dict(cfg, 0)).float().eval()
    compiled = copy.deepcopy(eager)
    compile_blocks(compiled, "cpu")
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(1, 65536, (args.batch, args.ctx_len), generator=gen)
    prompt = torch.randint(1, 65536, (args.prompt,), generator=gen).tolist()
    out = {"size": args.size, "version": args.version, "threads": torch.get_num_threads()}

    c0 = compile_seconds()
    first, lc = _timed(lambda: _eval_pass(compiled, idx))
    out["eval_compile_s"], out["eval_first_call_s"] = compile_seconds() - c0, first
    le = _eval_pass(eager, idx)
    out["eval_max_hidden_diff"] = float((lc - le).abs().max())
    t = _pairs(lambda: _eval_pass(eager, idx), lambda: _eval_pass(compiled, idx), args.pairs)
    out["eval_s"] = t
    out["eval_speedup"] = statistics.median(t["eager"]) / statistics.median(t["compiled"])

    c0 = compile_seconds()
    first, (tc, gc) = _timed(lambda: _generate(compiled, prompt, args.tokens))
    out["generate_compile_s"], out["generate_first_call_s"] = compile_seconds() - c0, first
    te, ge = _generate(eager, prompt, args.tokens)
    out["generate_same_tokens"] = te == tc
    out["generate_max_logit_diff"] = float((gc - ge).abs().max())
    t = _pairs(lambda: _generate(eager, prompt, args.tokens),
               lambda: _generate(compiled, prompt, args.tokens), args.pairs)
    out["generate_s"] = t
    out["generate_speedup"] = statistics.median(t["eager"]) / statistics.median(t["compiled"])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="0.1b", choices=list(SIZES))
    p.add_argument("--version", default="x070")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--ctx_len", type=int, default=256)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = run(args)
    if args.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        if isinstance(v, dict):
            v = {n: [round(x, 3) for x in xs] for n, xs in v.items()}
        elif isinstance(v, float):
            v = float(f"{v:.4g}")
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
