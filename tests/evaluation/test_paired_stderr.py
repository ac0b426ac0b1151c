"""`--compare`'s standard error of the change is paired by document (paired.py): checked against
hand computations from per-document values, for a mean metric, a group and a bootstrapped one."""
from __future__ import annotations

import math
import random

import pytest

pytest.importorskip("lm_eval")

from rwkvft.evaluation.paired import DocScores, paired_stderr
from rwkvft.evaluation.tasks import compare


def _run(per_task: dict, aggregation="mean", metric="acc", groups=None, results=None) -> dict:
    """An lm-eval result dict (simple_evaluate with log_samples) from {task: [per-doc values]}."""
    out = {"samples": {}, "configs": {}, "group_subtasks": groups or {}, "results": results or {}}
    for task, values in per_task.items():
        out["samples"][task] = [{"doc_id": i, "filter": "none", "metrics": [metric], metric: v}
                                for i, v in enumerate(values)]
        out["configs"][task] = {"metric_list": [{"metric": metric, "aggregation": aggregation}]}
        if all(isinstance(v, (int, float)) for v in values):
            out["results"].setdefault(task, {})[f"{metric},none"] = sum(values) / len(values)
    return out


def _hand_se(diffs: list[float]) -> float:
    n = len(diffs)
    m = sum(diffs) / n
    return math.sqrt(sum((d - m) ** 2 for d in diffs) / (n - 1) / n)


def _correlated(n=60, seed=0):
    """Per-document 0/1 correctness of a base and a fine-tune that mostly agree."""
    rng = random.Random(seed)
    base = [float(rng.random() < 0.5) for _ in range(n)]
    tuned = [b if rng.random() < 0.85 else 1.0 - b for b in base]
    return base, tuned


def test_mean_metric_stderr_is_the_stderr_of_per_document_differences():
    base, tuned = _correlated()
    b, a = DocScores(_run({"t": base})), DocScores(_run({"t": tuned}))
    se = paired_stderr(b, a, "t", "acc")
    assert se == pytest.approx(_hand_se([x - y for x, y in zip(tuned, base)]), rel=1e-12)
    independent = math.hypot(_hand_se(base), _hand_se(tuned))
    assert se < 0.6 * independent     # agreeing runs: pairing removes most of the variance
    table = compare({"t": {"acc": (sum(base) / 60, None)}}, {"t": {"acc": (sum(tuned) / 60, None)}},
                    docs=(b, a))
    row = table["t"]["acc"]
    assert row["diff"] == pytest.approx((sum(tuned) - sum(base)) / 60) and row["diff_stderr"] == se


def test_documents_that_do_not_match_give_no_stderr():
    base, tuned = _correlated()
    b, a = DocScores(_run({"t": base})), DocScores(_run({"t": tuned[:-1]}))
    assert paired_stderr(b, a, "t", "acc") is None
    assert compare({"t": {"acc": (0.5, 0.1)}}, {"t": {"acc": (0.6, 0.1)}})["t"]["acc"]["diff_stderr"] is None


def test_group_pools_its_leaf_documents_or_averages_leaf_stderrs():
    (b1, a1), (b2, a2) = _correlated(40, 1), _correlated(20, 2)
    groups = {"g": ["x", "y"], "x": [], "y": []}
    weighted = {"g": {"acc,none": (sum(b1) + sum(b2)) / 60}}
    b = DocScores(_run({"x": b1, "y": b2}, groups=groups, results=weighted))
    a = DocScores(_run({"x": a1, "y": a2}, groups=groups))
    pooled = [x - y for x, y in zip(a1 + a2, b1 + b2)]
    assert paired_stderr(b, a, "g", "acc") == pytest.approx(_hand_se(pooled), rel=1e-12)
    plain = {"g": {"acc,none": (sum(b1) / 40 + sum(b2) / 20) / 2}}
    b = DocScores(_run({"x": b1, "y": b2}, groups=groups, results=plain))
    leaf = [_hand_se([x - y for x, y in zip(a1, b1)]), _hand_se([x - y for x, y in zip(a2, b2)])]
    assert paired_stderr(b, a, "g", "acc") == pytest.approx(math.hypot(*leaf) / 2, rel=1e-12)


def test_perplexity_gets_a_paired_bootstrap_near_the_delta_method():
    """perplexity = exp(-mean log-likelihood): lm-eval bootstraps its stderr, so the change's is a
    paired bootstrap; for many documents it matches the delta method from per-document values."""
    rng = random.Random(3)
    n = 400
    base = [-2.0 + rng.gauss(0, 0.5) for _ in range(n)]
    tuned = [x + 0.1 + rng.gauss(0, 0.1) for x in base]
    b = DocScores(_run({"t": base}, aggregation="perplexity", metric="perplexity"))
    a = DocScores(_run({"t": tuned}, aggregation="perplexity", metric="perplexity"))
    se = paired_stderr(b, a, "t", "perplexity", bootstrap_iters=2000)
    pb, pa = math.exp(-sum(base) / n), math.exp(-sum(tuned) / n)
    # d(pa - pb) = -pa * d(mean tuned) + pb * d(mean base), per document
    per_doc = [-pa * t + pb * x for x, t in zip(base, tuned)]
    assert se == pytest.approx(_hand_se(per_doc), rel=0.1)
    assert se < 0.5 * math.hypot(pb * _hand_se(base), pa * _hand_se(tuned))


def test_metrics_lm_eval_gives_no_stderr_get_none():
    b = DocScores(_run({"t": [(-10.0, 3), (-12.0, 4), (-9.0, 2)]}, aggregation="bits_per_byte",
                       metric="bits_per_byte"))
    a = DocScores(_run({"t": [(-9.0, 3), (-11.0, 4), (-9.5, 2)]}, aggregation="bits_per_byte",
                       metric="bits_per_byte"))
    assert paired_stderr(b, a, "t", "bits_per_byte") is None
