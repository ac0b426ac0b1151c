"""`rwkvft.evaluate`: loss, perplexity and token count of a model (+ adapter / state) on a data
file; `evaluate_pairs`: ranking accuracy on a preference file (`rwkvft eval --pairs`).

The file is read exactly as training reads it (same reader, tokenizer, end-of-document token and
loss mask, via config.data_config) and scored by the same function validation uses
(training.evaluation), so evaluating a run's --val_file and adapter gives the run's validation
loss. Data settings (the flags declared eval=True: ctx_len, dataload, loss_mask, roles,
micro_bsz, ...) default to the run's train_config.json beside the adapter; `settings` override them.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError


@dataclass
class EvalReport:
    results: dict            # "base" / "adapted" -> training.evaluation.EvalResult
    n_samples: int
    data: object             # the DataConfig the file was read with
    settings: object = None  # the TrainConfig holding the data settings used
    inputs: dict = field(default_factory=dict)   # model, adapter, state, data_file as given

    @property
    def main(self):
        return self.results.get("adapted") or self.results["base"]


def evaluate(model, data_file, adapter=None, state=None, base=None, compare: bool = False,
             lora_alpha: float | None = None, device: str = "cpu", op: str = "chunked",
             train_config=None, settings: dict | None = None, progress: bool = True) -> EvalReport:
    """Score `model` (a checkpoint path) on `data_file`. With `adapter` / `state` the adapted model
    is scored (and the base too with `compare`); `base` + `compare` scores that checkpoint against
    `model` (e.g. a merged one). `settings`: data flag values (e.g. {"ctx_len": 512})."""
    from ..assembly import assemble_model
    from ..config.data_config import data_config
    from ..data.datasets import read_data
    from ..formats import read_model
    from ..hardware import resolve_device
    from ..models.schema import infer_config
    from ..training.evaluation import EvalResult
    from ..training.evaluation import evaluate as score
    from ..training.safety import check_finite_base
    from ..training.validation import val_samples_from

    check_sides(adapter, state, base, compare)
    cfg = eval_settings(model, data_file, adapter, train_config, settings or {})
    base_sd = read_model(model)
    check_finite_base(base_sd, model)  # train's check: a damaged file, not a NaN loss
    dcfg = dataclasses.replace(data_config(cfg), vocab_size=infer_config(base_sd).vocab_size,
                               progress=progress)
    samples = val_samples_from(read_data(dcfg), dcfg)
    hw = resolve_device(device, "fp32", flag="--device")
    results = {}
    for label, net in _models(base_sd, adapter, state, base, compare, lora_alpha, op):
        net = net.to(hw.device)
        t0 = time.perf_counter()
        s, c = score(net, samples, batch_size=cfg.micro_bsz, head_chunk=cfg.head_chunk,
                     device=hw.device, progress=progress and len(samples) > 64,
                     desc=f"scoring ({label})")
        results[label] = EvalResult(float(s), int(round(float(c))), time.perf_counter() - t0)
        del net
    return EvalReport(results, len(samples), dcfg, cfg,
                      dict(model=str(model), adapter=adapter, state=state, data_file=str(data_file)))


def check_sides(adapter, state, base, compare) -> None:
    """--compare needs two sides; --base is only the other side of --compare."""
    if compare and adapter is None and state is None and base is None:
        raise UserError("--compare needs --adapter (or --state), or --base for a merged --model")
    if base is not None and not compare:
        raise UserError("--base is the other side of --compare; add --compare")


def _models(base_sd, adapter, state, base, compare, lora_alpha, op):
    """Yield (label, model): the base alone (without an adapter, or with compare) and the adapted
    one, built one at a time. With `base`, "base" is that file and "adapted" the model."""
    from ..assembly import assemble_model
    from ..formats import read_model
    from ..training.safety import check_finite_base
    adapted = base is not None or adapter is not None or state is not None
    if base is not None:
        other = read_model(base)
        check_finite_base(other, base)
        yield "base", assemble_model(other, op=op)
    elif compare or not adapted:
        yield "base", assemble_model(base_sd, op=op)
    if adapted:
        yield "adapted", assemble_model(base_sd, adapter=adapter, state=state, lora_alpha=lora_alpha,
                                        op=op)


def evaluate_pairs(model, data_file, adapter=None, state=None, base=None, compare: bool = False,
                   lora_alpha: float | None = None, device: str = "cpu", op: str = "chunked",
                   train_config=None, settings: dict | None = None, beta: float = 0.1) -> dict:
    """Preference pairs (prompt/chosen/rejected) in `data_file`: each model's ranking accuracy and
    margin, and with both sides DPO's implicit rewards (training/preference_eval.py scores)."""
    from ..data.preference import pair_roles
    from ..formats import read_model
    from ..hardware import resolve_device
    from ..training.preference_eval import score_file
    check_sides(adapter, state, base, compare)
    cfg = eval_settings(model, data_file, adapter, train_config, settings or {})
    if not beta > 0:
        raise UserError(f"--beta must be positive, got {beta}")
    hw = resolve_device(device, "fp32", flag="--device")
    models = list(_models(read_model(model), adapter, state, base, compare, lora_alpha, op))
    return score_file(models, data_file, cfg.ctx_len, cfg.micro_bsz, hw.device,
                      pair_roles(cfg), beta,
                      cfg.max_bad_fraction, cfg.head_chunk)


def eval_settings(model, data_file, adapter, train_config, settings: dict):
    """A TrainConfig holding only what decides the samples: saved settings < `settings`."""
    from ..config import TrainConfig, eval_flags, validate
    names = {f.name for f in eval_flags()}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise UserError(f"evaluate() got unknown data setting(s) {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(names))}")
    cfg = TrainConfig(load_model=str(model), data_file=str(data_file))
    for k, v in {**saved_settings(adapter, train_config), **settings}.items():
        setattr(cfg, k, list(v) if isinstance(v, tuple) else v)
    validate(cfg)
    return cfg


def saved_settings(adapter, train_config) -> dict:
    """The eval flags' values in a run's train_config.json (given, or the one beside `adapter`),
    each checked to have its flag's JSON type."""
    from ..config import eval_flags
    from ..training.saved_config import train_config_settings
    path = Path(train_config) if train_config else (
        Path(adapter).parent / "train_config.json" if adapter else None)
    if path is None or not path.exists():
        if train_config:
            raise UserError(f"--train_config {path} not found")
        return {}
    # a run from before chat templates wrote its chat records in what is now `raw`
    return {"chat_template": "raw", **train_config_settings(path, [f.name for f in eval_flags()])}
