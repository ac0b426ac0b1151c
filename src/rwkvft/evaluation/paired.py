"""The standard error of a fine-tune's change on a benchmark, paired by document.

Base and fine-tune score the SAME documents, so their scores are correlated and
sqrt(se_base^2 + se_adapted^2) (independent runs) overstates the error of the difference. Here:
- a metric averaged over documents (acc, acc_norm, exact_match: lm-eval's `mean` aggregation):
  the per-document differences d_i = adapted_i - base_i, stderr = sd(d, ddof=1) / sqrt(n), lm-eval's
  own mean_stderr formula applied to d;
- any other aggregation lm-eval gives a stderr for (perplexity, f1, ...: its bootstrap list): a
  paired bootstrap, the same resampled documents on both sides;
- others (word_perplexity, bits_per_byte have none in lm-eval either): None;
- a group (mmlu): its leaf tasks' documents pooled when the group is the size-weighted mean of its
  leaves (lm-eval's default), sqrt(sum se_i^2) / k when it is their plain mean.
"""
from __future__ import annotations

import math
import random
import statistics


class DocScores:
    """Per-document metric values of one lm-eval run (simple_evaluate(..., log_samples=True))."""

    def __init__(self, out: dict):
        self.items: dict[str, dict[str, dict]] = {}      # task -> metric name -> {doc_id: item}
        for task, samples in (out.get("samples") or {}).items():
            for s in samples:
                for metric in s.get("metrics", []):
                    name = metric if s["filter"] == "none" else f"{metric},{s['filter']}"
                    self.items.setdefault(task, {}).setdefault(name, {})[s["doc_id"]] = s[metric]
        self.configs = out.get("configs") or {}
        self.children = out.get("group_subtasks") or {}
        self.values = {task: {k: v for k, v in res.items() if isinstance(v, (int, float))}
                       for task, res in (out.get("results") or {}).items()}

    def leaves(self, task: str) -> list[str]:
        kids = self.children.get(task) or []
        return [leaf for k in kids for leaf in self.leaves(k)] if kids else [task]

    def aggregation(self, task: str, metric: str):
        """lm-eval's aggregation function of `metric` in `task` (the task's YAML, else the
        metric's registered default)."""
        from lm_eval.api.registry import get_aggregation, get_metric_aggregation
        base = metric.split(",", 1)[0]
        for entry in self.configs.get(task, {}).get("metric_list") or []:
            if entry.get("metric") == base and entry.get("aggregation") is not None:
                agg = entry["aggregation"]
                return agg if callable(agg) else get_aggregation(str(agg))
        return get_metric_aggregation(base)


def paired_stderr(base: DocScores, adapted: DocScores, task: str, metric: str,
                  bootstrap_iters: int = 1000) -> float | None:
    """Standard error of adapted - base on `task`/`metric`, paired by document (module doc)."""
    leaves = base.leaves(task)
    if leaves != [task]:
        return _group_stderr(base, adapted, task, metric, leaves, bootstrap_iters)
    pairs = _pairs(base, adapted, task, metric)
    if pairs is None or len(pairs) < 2:
        return None
    from lm_eval.api.metrics import mean, stderr_for_metric
    agg = base.aggregation(task, metric)
    if agg is mean:
        return statistics.stdev(float(a) - float(b) for b, a in pairs) / math.sqrt(len(pairs))
    if agg is None or stderr_for_metric(agg, bootstrap_iters) is None:
        return None
    return paired_bootstrap(pairs, agg, bootstrap_iters)


def paired_bootstrap(pairs: list[tuple], agg, iters: int, seed: int = 1234) -> float:
    """sd over `iters` resamples (the same documents on both sides) of agg(adapted) - agg(base)."""
    rng = random.Random(seed)
    n, diffs = len(pairs), []
    for _ in range(iters):
        pick = [pairs[rng.randrange(n)] for _ in range(n)]
        diffs.append(float(agg([a for _, a in pick])) - float(agg([b for b, _ in pick])))
    return statistics.stdev(diffs)


def _pairs(base: DocScores, adapted: DocScores, task: str, metric: str) -> list[tuple] | None:
    """[(base item, adapted item)] per document; None unless both runs scored the same documents."""
    b = base.items.get(task, {}).get(metric)
    a = adapted.items.get(task, {}).get(metric)
    if not b or not a or set(b) != set(a):
        return None
    return [(b[d], a[d]) for d in sorted(b)]


def _group_stderr(base, adapted, task, metric, leaves, iters) -> float | None:
    key = metric if "," in metric else f"{metric},none"
    group_value = base.values.get(task, {}).get(key)
    values = [base.values.get(leaf, {}).get(key) for leaf in leaves]
    pairs = [_pairs(base, adapted, leaf, metric) for leaf in leaves]
    if group_value is None or None in values or any(p is None for p in pairs):
        return None
    sizes = [len(p) for p in pairs]
    if math.isclose(group_value, sum(v * n for v, n in zip(values, sizes)) / sum(sizes), abs_tol=1e-9):
        pooled = [(b, a) for p in pairs for b, a in p]
        if len(pooled) < 2 or any(base.aggregation(leaf, metric) is not _mean() for leaf in leaves):
            return None
        return statistics.stdev(float(a) - float(b) for b, a in pooled) / math.sqrt(len(pooled))
    if math.isclose(group_value, sum(values) / len(values), abs_tol=1e-9):
        ses = [paired_stderr(base, adapted, leaf, metric, iters) for leaf in leaves]
        return None if None in ses else math.sqrt(sum(s * s for s in ses)) / len(ses)
    return None


def _mean():
    from lm_eval.api.metrics import mean
    return mean
