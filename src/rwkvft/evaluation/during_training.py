"""--eval_tasks: benchmark scores of every saved adapter, written beside the loss.

At each step or epoch save, the model in training memory (adapters injected, nothing reloaded)
is scored on the tasks through lm-eval, in eval mode under the run's precision context; one row
{"kind": "tasks", "step", "epoch", "adapter", "scores": {"task/metric": value}, "stderr": {...}}
goes into loss.jsonl (loss.png draws it) and one line into train_log.txt. With --save_best and
--best_metric TASK/METRIC the adapter with the best such score is kept as rwkv-best. How the flags
fit together is checked with the others (config/validate.py).
"""
from __future__ import annotations

import math
import time

from ..errors import UserError


def task_scorer(cfg, runlog, rank0: bool):
    """The save hook of training.run.train for --eval_tasks (None without the flag, and off rank 0);
    the task names are checked now, before any training."""
    if not cfg.eval_tasks or not rank0:
        return None
    scorer = TaskScorer(cfg, runlog)
    scorer.check()
    return scorer


class TaskScorer:
    """Called by the adapter saver after each tracked save (rank 0): a save hook."""

    def __init__(self, cfg, runlog):
        from .tasks import parse_tasks, require_lm_eval
        require_lm_eval()
        self.names = parse_tasks(cfg.eval_tasks)
        self.limit = cfg.eval_limit or None
        self.include_path = cfg.eval_include_path or None
        self.best_metric = cfg.best_metric or None
        self.runlog = runlog
        self.best = None                 # (value, step) of the best --best_metric so far
        self._tm = None

    def check(self) -> None:
        """Before training: the task names resolve (an unknown name fails now, not at the first save)."""
        from .tasks import check_tasks, task_manager
        self._tm = task_manager(self.names, self.include_path)
        check_tasks(self._tm, self.names)

    def __call__(self, model, path, step: int, epoch, device, forward_context=None, save_best=None) -> dict:
        from contextlib import nullcontext

        from ..training.evaluation import evaluating
        from .harness import RwkvLM
        from .tasks import run_tasks
        if self._tm is None:
            self.check()
        t0 = time.perf_counter()
        info: dict = {}
        with evaluating(model), (forward_context or nullcontext)():
            lm = RwkvLM(model=model, device=str(device))
            table = run_tasks(lm, self.names, limit=self.limit, tm=self._tm, info=info)
        scores = {f"{t}/{m}": v for t, ms in table.items() for m, (v, _) in ms.items()}
        row = {"kind": "tasks", "step": step, "epoch": epoch, "adapter": path.name, "scores": scores,
               "stderr": {f"{t}/{m}": se for t, ms in table.items() for m, (_, se) in ms.items()},
               "seconds": round(time.perf_counter() - t0, 2)}
        self.runlog.record(row)
        self.runlog.line(f"tasks for {path.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
                         + f" ({row['seconds']:.1f}s)")
        if self.best_metric and save_best is not None:
            self._track_best(scores, info.get("higher_is_better", {}), step, save_best)
        return row

    def _track_best(self, scores: dict, higher: dict, step: int, save_best) -> None:
        if self.best_metric not in scores:
            raise UserError(f"--best_metric {self.best_metric}: the tasks report "
                            f"{', '.join(sorted(scores))}; pick one of those")
        value = scores[self.best_metric]
        up = higher.get(self.best_metric, True)
        if math.isnan(value):
            return
        if self.best is None or (value > self.best[0] if up else value < self.best[0]):
            self.best = (value, step)
            path = save_best()
            self.runlog.line(f"best: {path.name} is now step {step}, {self.best_metric} {value:.4f}")
