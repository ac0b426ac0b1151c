"""Standard benchmark tasks through lm-evaluation-harness: run, compare, report.

`run_tasks(lm, ...)` scores one model on lm-eval tasks (built-in names, or the user's own YAMLs
through include_path) and returns {task: {metric: (value, stderr)}}; `compare` lines up a base
and a fine-tune with the difference and its standard error (paired by document: paired.py).
Every failure a user can cause (unknown task, a hub dataset without network, --limit 0, lm-eval
not installed) becomes one UserError naming the fix.
"""
from __future__ import annotations

import difflib

from ..errors import UserError

EXTRA_HINT = "pip install 'rwkvft[eval]'"


def require_lm_eval():
    """The lm_eval module, or the error naming the optional extra that installs it."""
    try:
        import lm_eval  # noqa: F401
        import lm_eval.evaluator  # noqa: F401
    except ImportError:
        raise UserError(f"benchmark tasks need lm-evaluation-harness, an optional extra: {EXTRA_HINT}") from None
    return lm_eval


def parse_tasks(text: str) -> list[str]:
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise UserError("--tasks needs task names, e.g. --tasks hellaswag,arc_easy")
    return names


def task_manager(names: list[str], include_path=None):
    """lm-eval's TaskManager. Indexing lm-eval's ~15k built-in task YAMLs takes ~30 s on a small
    CPU, so when every name is one of the user's own (include_path) only those are indexed."""
    require_lm_eval()
    from pathlib import Path

    from lm_eval.tasks import TaskManager
    paths = [str(p) for p in ([include_path] if isinstance(include_path, (str, Path))
                              else include_path or [])]
    for p in paths:
        if not Path(p).exists():
            raise UserError(f"--include_path {p} does not exist; give the folder holding your task YAMLs")
    if paths:
        local = TaskManager(include_path=paths, include_defaults=False)
        if all(n in set(local.all_tasks) for n in names):
            return local
    return TaskManager(include_path=paths or None)


def check_tasks(tm, names: list[str]) -> None:
    known = set(tm.all_tasks)
    unknown = [n for n in names if n not in known and not tm.match_tasks([n])]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else \
            "; list them with `lm_eval ls tasks`, or add your own YAML folder with --include_path"
        raise UserError(f"unknown task {unknown[0]!r}{hint}")


def run_tasks(lm, names: list[str], num_fewshot=None, limit=None, include_path=None,
              tm=None, bootstrap_iters: int = 1000, info: dict | None = None, per_doc: bool = False) -> dict:
    """{task: {metric: (value, stderr or None)}} for `lm` (an lm_eval LM) on tasks `names`.
    `info`, if given, receives "higher_is_better": {"task/metric": bool} from lm-eval and, with
    `per_doc`, "docs": the per-document scores (paired.DocScores, for compare)."""
    require_lm_eval()
    from lm_eval import evaluator
    if limit is not None and not limit > 0:
        raise UserError(f"--limit must be a positive number of documents per task, got {limit:g}")
    if num_fewshot is not None and num_fewshot < 0:
        raise UserError(f"--num_fewshot must be 0 or more, got {num_fewshot}")
    tm = tm or task_manager(names, include_path)
    check_tasks(tm, names)
    _quiet_loggers()
    try:
        out = evaluator.simple_evaluate(model=lm, tasks=names, num_fewshot=num_fewshot, limit=limit,
                                        task_manager=tm, log_samples=per_doc,
                                        bootstrap_iters=bootstrap_iters, verbosity="ERROR")
    except UserError:
        raise
    except Exception as e:  # lm-eval raises plain exceptions for data it cannot get
        raise UserError(_explain(e, names)) from None
    if info is not None:
        info["higher_is_better"] = {f"{t}/{m}": bool(up) for t, ms in (out.get("higher_is_better") or {}).items()
                                    for m, up in ms.items()}
        if per_doc:
            from .paired import DocScores
            info["docs"] = DocScores(out)
    return metrics_of(out)


def _quiet_loggers() -> None:
    """lm-eval and the hub clients log every retry and config default as warnings; a failure
    reaches the user as our one error line instead (`--debug` in rwkvft shows tracebacks)."""
    import logging
    for name in ("lm_eval", "datasets", "huggingface_hub", "fsspec", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _explain(e: Exception, names) -> str:
    text = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    net = ("connect", "network", "offline", "resolve", "hub", "huggingface", "dataset", "timed out",
           "couldn't reach", "max retries")
    if any(w in text.lower() for w in net) or isinstance(e, (ConnectionError, TimeoutError)):
        return (f"task data for {', '.join(names)} could not be loaded ({text}); a task whose "
                f"dataset is on the Hugging Face hub needs network once (then it is cached): "
                f"or write a task YAML over a local file and pass --include_path")
    return f"lm-eval could not run {', '.join(names)}: {text}"


def metrics_of(out: dict) -> dict:
    """lm-eval's results {task: {"acc,none": v, "acc_stderr,none": s, ...}} -> {task: {metric: (v, s)}}."""
    table = {}
    for task, res in (out.get("results") or {}).items():
        row = {}
        for key, value in res.items():
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            se = res.get(f"{metric}_stderr,{filt}")
            name = metric if filt == "none" else f"{metric},{filt}"
            row[name] = (float(value), float(se) if isinstance(se, (int, float)) else None)
        table[task] = row
    return table


def compare(base: dict, adapted: dict, docs=None, bootstrap_iters: int = 1000) -> dict:
    """{task: {metric: {"base", "adapted", "diff", "diff_stderr"}}}. `docs` = (base, adapted)
    paired.DocScores: the difference's standard error is paired by document (paired.py); without
    them it is None (two independent stderrs would overstate it: the runs share the documents)."""
    from .paired import paired_stderr
    out = {}
    for task, metrics in adapted.items():
        for metric, (a, _) in metrics.items():
            if metric not in base.get(task, {}):
                continue
            b = base[task][metric][0]
            se = paired_stderr(docs[0], docs[1], task, metric, bootstrap_iters) if docs else None
            out.setdefault(task, {})[metric] = {"base": b, "adapted": a, "diff": a - b, "diff_stderr": se}
    return out


def format_table(results: dict, label: str = "") -> list[str]:
    lines = [f"{'task':24s}{'metric':16s}{'value':>10s}{'stderr':>10s}{label:>10s}"]
    for task, metrics in results.items():
        for metric, (v, se) in metrics.items():
            lines.append(f"{task:24s}{metric:16s}{v:10.4f}{'' if se is None else f'{se:10.4f}':>10s}")
    return lines


def format_compare(table: dict) -> list[str]:
    lines = [f"{'task':24s}{'metric':16s}{'base':>10s}{'adapted':>10s}{'change':>10s}{'+-stderr':>10s}"]
    for task, metrics in table.items():
        for metric, r in metrics.items():
            se = "" if r["diff_stderr"] is None else f"{r['diff_stderr']:10.4f}"
            lines.append(f"{task:24s}{metric:16s}{r['base']:10.4f}{r['adapted']:10.4f}"
                         f"{r['diff']:+10.4f}{se:>10s}")
    return lines
