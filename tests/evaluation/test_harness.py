"""lm-eval integration on local tasks: every log-likelihood against a direct computation with
our model, lm-eval's metrics against hand computations, shared context = plain path, rolling
windows = one pass, generation against a step-by-step greedy / sampled reference."""
from __future__ import annotations

import math
import re

import pytest
import torch

pytest.importorskip("lm_eval")  # the eval extra; in [test], so CI has it (tests/test_gpu_collection.py)

from eval_helpers import GEN_DOCS, MC_DOCS, ROLL_DOCS, direct_logprob, greedy_text, tasks_dir  # noqa: F401  (fixture)

from rwkvft.evaluation.harness import RwkvLM  # noqa: E402
from rwkvft.evaluation.scoring import Scorer  # noqa: E402
from rwkvft.evaluation.tasks import run_tasks, task_manager  # noqa: E402


class Recording(RwkvLM):
    """RwkvLM that keeps every request it answered, with its answer."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.ll, self.rolling, self.gen = [], [], []

    def _loglikelihood_tokens(self, requests, **kw):
        out = super()._loglikelihood_tokens(requests, **kw)
        self.ll += list(zip(requests, out))
        return out

    def loglikelihood_rolling(self, requests, **kw):
        out = super().loglikelihood_rolling(requests, **kw)
        self.rolling += [(r.args[0], o) for r, o in zip(requests, out)]
        return out

    def generate_until(self, requests, **kw):
        out = super().generate_until(requests, **kw)
        self.gen += [(r.args, o) for r, o in zip(requests, out)]
        return out


@pytest.fixture(scope="module")
def world_model(make_checkpoint):
    """A tiny random RWKV-7 with the World vocabulary (the real tokenizer runs)."""
    return make_checkpoint(n_layer=2, n_embd=64, vocab_size=65536, seed=3)


def _run(lm, name, tasks_dir, **kw):
    return run_tasks(lm, [name], tm=task_manager([name], tasks_dir), **kw)[name]


def test_multiple_choice_loglikelihoods_and_accuracy_by_hand(world_model, tasks_dir):
    lm = Recording(pretrained=world_model, batch_size=3)
    table = _run(lm, "h28_mc", tasks_dir)
    assert len(lm.ll) == 4 * len(MC_DOCS)
    tok, model = lm.tokenizer, lm._model
    scores: dict[str, dict[str, float]] = {}
    for ((context, continuation), ctx, cont), (ll, greedy) in lm.ll:
        # lm-eval's split with the World tokenizer: the pair tokenizes as the whole text does
        assert ctx == tok.encode(context) and ctx + cont == tok.encode(context + continuation)
        ref, ref_greedy = direct_logprob(model, ctx, cont)
        assert abs(ll - ref) <= 1e-5 and greedy == ref_greedy
        scores.setdefault(context, {})[continuation] = ref
    hits = []
    for doc in MC_DOCS:
        lls = scores[f"Question: {doc['question']}\nAnswer:"]
        picked = max(range(4), key=lambda j: lls[" " + doc["choices"][j]])
        hits.append(picked == doc["label"])
    acc = sum(hits) / len(hits)
    value, stderr = table["acc"]
    assert value == pytest.approx(acc, abs=1e-12)
    assert stderr == pytest.approx(math.sqrt(acc * (1 - acc) / (len(hits) - 1)), abs=1e-12)


def test_shared_context_equals_plain_path_with_fewer_tokens(world_model, tasks_dir):
    lm = Recording(pretrained=world_model)
    _run(lm, "h28_mc", tasks_dir)
    pairs = [(ctx, cont) for (_, ctx, cont), _ in lm.ll]
    shared, plain = Scorer(lm._model, "cpu", batch_size=3), Scorer(lm._model, "cpu", batch_size=5)
    a, b = shared.loglikelihood(pairs, shared=True), plain.loglikelihood(pairs, shared=False)
    for (la, ga), (lb, gb) in zip(a, b):
        assert abs(la - lb) <= 1e-5 and ga == gb
    contexts = {tuple(c) for c, _ in pairs}
    assert shared.counter.tokens["context"] == sum(len(c) for c in contexts)
    assert plain.counter.tokens["context"] == sum(len(c) for c, _ in pairs)
    assert plain.counter.tokens["context"] == 4 * shared.counter.tokens["context"]   # k = 4 choices
    assert shared.counter.plain == plain.counter.plain == plain.counter.total


def test_shared_context_with_an_initial_state_and_uneven_contexts(world_model):
    # contexts of several lengths, continuations of 1..4 tokens, a state-tuned start
    lm = RwkvLM(pretrained=world_model)
    model = lm._model
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    from rwkvft import set_state
    set_state(model, {f"blocks.{i}.att.time_state": torch.randn(cfg.n_head, cfg.head_size, cfg.head_size,
                                                               generator=g) * 0.3
                      for i in range(cfg.n_layer)})
    pairs = [([5, 9, 200], [7]), ([5, 9, 200], [8, 1000, 3]), ([42], [1, 2, 3, 4]), ([42], [9]),
             ([11, 12, 13, 14, 15], [16, 17])]
    a = Scorer(model, "cpu", batch_size=2).loglikelihood(pairs, shared=True)
    b = Scorer(model, "cpu", batch_size=4).loglikelihood(pairs, shared=False)
    for (ctx, cont), (la, _), (lb, _) in zip(pairs, a, b):
        ref, _ = direct_logprob(model, ctx, cont)
        assert abs(la - ref) <= 1e-5 and abs(lb - ref) <= 1e-5


def test_rolling_loglikelihood_carries_state_across_windows(world_model, tasks_dir):
    lm = Recording(pretrained=world_model, window=5, batch_size=3)
    table = _run(lm, "h28_roll", tasks_dir)
    assert len(lm.rolling) == len(ROLL_DOCS)
    total_ll = total_words = total_bytes = 0
    for text, ll in lm.rolling:
        ids = lm.tokenizer.encode(text)
        ref, _ = direct_logprob(lm._model, [0], ids)   # conditioned on the end-of-text token
        # ll is an fp32 sum of a whole document's log-probs (~ -268 here, where fp32's spacing is
        # 3e-5): relative to its size, not absolute
        assert abs(ll - ref) <= 1e-5 + 1e-6 * abs(ref)
        total_ll += ref
        total_words += len(re.split(r"\s+", text))
        total_bytes += len(text.encode("utf-8"))
    assert table["word_perplexity"][0] == pytest.approx(math.exp(-total_ll / total_words), rel=1e-5)
    assert table["bits_per_byte"][0] == pytest.approx(-total_ll / total_bytes / math.log(2), rel=1e-5)
    # each token read once: windows carry the state instead of re-reading an overlap
    assert lm.scorer.counter.tokens["rolling"] == sum(len(lm.tokenizer.encode(t)) for t, _ in lm.rolling)


def test_generation_task_greedy_with_stop_string(world_model, tasks_dir):
    lm = Recording(pretrained=world_model, batch_size=3)
    table = _run(lm, "h28_gen", tasks_dir)
    hits = []
    for ((context, kwargs), out), doc in zip(lm.gen, GEN_DOCS):
        assert context == doc["q"] and kwargs["until"] == ["\n"] and kwargs["max_gen_toks"] == 6
        ids = greedy_text(lm._model, lm.tokenizer, lm.tokenizer.encode(context), 6)
        text = lm.tokenizer.decode(ids)
        assert out == text.split("\n")[0]
        hits.append(out == doc["a"])
    assert table["exact_match"][0] == pytest.approx(sum(hits) / len(hits))


def test_generation_stop_strings_max_tokens_sampling_and_batching(world_model):
    lm = RwkvLM(pretrained=world_model)
    tok, model = lm.tokenizer, lm._model
    prompts = [tok.encode("Hello there"), tok.encode("A"), tok.encode("One two three four")]
    full = [tok.decode(greedy_text(model, tok, p, 10)) for p in prompts]
    assert all(len(t) >= 6 for t in full)
    greedy = {"until": [], "max_tokens": 10, "temperature": 0.0, "top_p": 1.0, "seed": 0}
    stops = [t[3:5] for t in full]                      # a stop string the greedy text reaches
    settings = [dict(greedy, until=["never seen", s]) for s in stops]
    one = Scorer(model, "cpu", batch_size=1).generate(prompts, settings, tok.decode)
    three = Scorer(model, "cpu", batch_size=3).generate(prompts, settings, tok.decode)
    assert one == three == [t[:t.find(s)] for t, s in zip(full, stops)]
    short = Scorer(model, "cpu").generate(prompts, [dict(greedy, max_tokens=4)] * 3, tok.decode)
    assert short == [tok.decode(greedy_text(model, tok, p, 4)) for p in prompts]
    # sampled: the same draws as the sampler of `rwkvft generate`, step by step on re-read logits
    from rwkvft.generation import sample
    sampled = dict(greedy, temperature=1.0, top_p=0.9, seed=7, max_tokens=8)
    got = Scorer(model, "cpu", batch_size=2).generate(prompts, [sampled] * 3, tok.decode)
    for p, text in zip(prompts, got):
        gen, ids = torch.Generator().manual_seed(7), list(p)
        with torch.no_grad():
            for _ in range(8):
                t = sample(model(torch.tensor([ids]))[0, -1], 1.0, 0.9, gen)
                if t == 0:
                    break
                ids.append(t)
        assert text == tok.decode(ids[len(p):])
    assert got != Scorer(model, "cpu").generate(prompts, [greedy] * 3, tok.decode)


def test_harness_gen_kwargs_map_to_settings(world_model):
    lm = RwkvLM(pretrained=world_model, seed=5)
    s = lm._gen_settings({"until": "###", "max_gen_toks": 3, "do_sample": False, "temperature": 0.7})
    assert s == {"until": ["###"], "max_tokens": 3, "temperature": 0.0, "top_p": 1.0, "seed": 5}
    s = lm._gen_settings({"do_sample": True, "temperature": 0.7, "top_p": 0.5})
    assert (s["temperature"], s["top_p"], s["max_tokens"]) == (0.7, 0.5, 256)


def test_bf16_scores_track_fp32_and_shared_equals_plain(world_model):
    half, full = RwkvLM(pretrained=world_model, dtype="bfloat16"), RwkvLM(pretrained=world_model)
    assert half._model.emb.weight.dtype == torch.bfloat16
    pairs = [([5, 9, 200, 7, 7, 7], [7]), ([5, 9, 200, 7, 7, 7], [8, 1000, 3]), ([42], [1, 2, 3, 4])]
    a = half.scorer.loglikelihood(pairs, shared=True)
    b = half.scorer.loglikelihood(pairs, shared=False)
    c = full.scorer.loglikelihood(pairs)
    for (la, _), (lb, _), (lc, _) in zip(a, b, c):
        assert abs(la - lb) <= 1e-3 and abs(la - lc) <= 0.02 * abs(lc)


def test_a_misspelt_model_argument_is_refused(world_model):
    from rwkvft.errors import UserError
    with pytest.raises(UserError, match="adpater"):
        RwkvLM(pretrained=world_model, adpater="rwkv-1.pth")
