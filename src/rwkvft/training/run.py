"""`rwkvft train`: the recipe, one named step after another; the parts live in their own modules
(execution: accelerator, precision, op, strategy; loggers; run_dir: the run folder and header;
saver: the adapter saves; teardown: interrupt report, rank check, merge, DDP group).

    plan_run        resolve and validate every option (nothing is read yet)
    prepare_proj_dir / RunLog   the run folder (refuses to clobber a run)   (run_dir.py)
    load_base       read the base checkpoint, check user-given sizes, build the fp32 model
    prepare_model   inject the method, cast the frozen base, quantize it   (model_prep.py;
                    bench uses it too)
    build_data      the dataset
    build_trainer   the Lightning trainer, module and callbacks
    fit             train; a non-finite loss stops with the last good save named
    finish          check ranks agree, optionally merge, close the log   (teardown.py)
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..adapters import AdapterConfig, PeftMethod
from ..config import TrainConfig
from ..config.data_config import data_config
from ..errors import Checks, UserError
from ..utils import note
from . import ds, nodes, runlock, safety
from .callbacks import RunLog, SaveAdapter, StepMetrics, plot_losses
from .compiling import compile_callbacks, compile_for_training
from .console import console_callbacks, share_cpu_cores
from .execution import check_op_name, lightning_strategy, resolve_hardware, resolve_wkv_op
from .interrupt import StopRequest
from .loggers import check_loggers, make_loggers
from .model_prep import prepare_model, quant_device
from .module import FineTuneModule, NonFiniteLoss, total_optimizer_steps
from .run_dir import prepare_proj_dir, rank_zero, write_run_header
from .saver import AdapterSaver, fingerprint_of, sample_writer
from .steps import ResumableData, StepEvents, budget_steps, silence_mid_epoch_resume_warning
from .teardown import check_ranks_in_sync, close_process_group, merge_to_file, report_interrupt

if TYPE_CHECKING:
    from ..data import DataConfig


@dataclass
class TrainResult:
    proj_dir: Path
    adapters: list = field(default_factory=list)
    merged: Path | None = None
    validation: list = field(default_factory=list)  # the "kind": "val" rows of loss.jsonl
    samples: list = field(default_factory=list)     # (adapter file name, continuations) per save


@dataclass
class Plan:
    """Every option of a run, resolved and validated before the base model is read."""
    cfg: TrainConfig
    acc: str                 # lightning accelerator: cpu | gpu
    precision: str           # lightning precision: 32-true | bf16-mixed | 16-mixed
    peft: AdapterConfig
    method: PeftMethod
    data: DataConfig         # vocab_size 0 until the base is read
    world: int               # processes in all
    rank0: bool
    val_data: DataConfig | None = None   # --val_file, read like the training data
    pairs: object = None     # --objective dpo|orpo|simpo: training.preference_run.PreferenceData

    @property
    def proj(self) -> Path:
        return Path(self.cfg.proj_dir)


def plan_run(cfg: TrainConfig) -> Plan:
    """Step 1: resolve hardware, PEFT method, data settings, WKV op name and loggers, and
    check them all; nothing is read or written yet."""
    from ..adapters import parse_peft, registry

    checks = Checks()   # every problem in one message, not one per run
    acc, precision = checks.run(resolve_hardware, cfg) or (None, None)
    peft = checks.run(parse_peft, cfg.peft, cfg.peft_config)
    checks.run(safety.check_merge_output, cfg)
    if acc:
        checks.run(check_op_name, cfg.op, acc)
    method = registry.get(peft.method) if peft else None
    if method and method.full_model and cfg.quant != "none":
        checks.add(f"--quant {cfg.quant} stores the frozen base under adapters, but --peft "
                   f"{method.name} trains every weight; use --quant none")
    data = checks.run(data_config, cfg)
    val_data = checks.run(data_config, cfg, cfg.val_file) if cfg.val_file else None
    checks.run(check_loggers, cfg)
    if checks.lines and Path(cfg.load_model).is_file():   # its sizes too: one run lists everything
        checks.run(safety.check_checkpoint_sizes, cfg)
    checks.raise_if_any()
    if acc == "cpu" and precision == "bf16-mixed":
        note("--precision bf16 on CPU is about 100x slower than fp32 (CPUs have no fast bf16 "
             "matmul); on CPU pass --precision fp32 or leave it out")
    from .preference_run import read_preference_data
    pairs = read_preference_data(cfg, method)  # None for sft; before any model is loaded
    return Plan(cfg, acc, precision, peft, method, data,
                cfg.devices * cfg.num_nodes, rank_zero(), val_data, pairs)


def load_base(cfg: TrainConfig):
    """Step 2: (base state dict as read (mmap), its ModelConfig, an fp32 model holding it)."""
    from ..formats import load_model, read_state_dict
    from ..models.schema import check_against, infer_config

    base_sd = read_state_dict(cfg.load_model)
    safety.check_finite_base(base_sd, cfg.load_model)
    mcfg = infer_config(base_sd)
    check_against(mcfg, n_layer=cfg.n_layer, n_embd=cfg.n_embd, vocab_size=cfg.vocab_size,
                  head_size=cfg.head_size_a, version=cfg.my_testing)
    # read again rather than share base_sd's (mmap) tensors: training updates parameters in place
    model = load_model(cfg.load_model, dtype=torch.float32).train()
    return base_sd, mcfg, model


def build_data(plan: Plan, vocab_size: int):
    """Step 4: (training dataset, validation samples or None) for the checkpoint's vocabulary;
    see training/validation.py for --val_file / --val_split."""
    import dataclasses

    from .validation import build_training_and_validation
    cfg = plan.cfg
    if plan.pairs is not None:
        return plan.pairs.datasets(plan, vocab_size)
    dcfg = dataclasses.replace(plan.data, vocab_size=vocab_size)
    val_dcfg = plan.val_data and dataclasses.replace(plan.val_data, vocab_size=vocab_size)
    dataset, val = build_training_and_validation(cfg, dcfg, val_dcfg, plan.world)
    return dataset, val


def train(cfg: TrainConfig, save_hooks=()) -> TrainResult:
    """The recipe (module docstring): each step is one function below. `save_hooks`: factories
    `make(cfg, log, rank0) -> hook or None`, each hook called after every tracked save (see
    saver.AdapterSaver); rwkvft.train passes --eval_tasks' scorer this way (a layer above)."""
    import lightning as L

    if cfg.eval_tasks and not save_hooks:   # never a silently ignored flag
        raise UserError("--eval_tasks needs its scorer: call rwkvft.train (it passes one)")
    created = safety.folders_to_create(cfg.proj_dir)
    try:
        plan = plan_run(cfg)
        if plan.rank0:
            prepare_proj_dir(cfg)
        log = RunLog(plan.proj, enabled=plan.rank0)
        base_sd, mcfg, model = load_base(cfg)
        safety.check_state_merge(plan.peft, cfg, mcfg.version)  # before training, not after
        op = resolve_wkv_op(cfg, plan.acc, mcfg.version)  # the version decides which ops can run it
        model.set_runtime(op=op, grad_cp=bool(cfg.grad_cp))
        L.seed_everything(cfg.random_seed, workers=True, verbose=False)
        trainable, quant_note = prepare_model(model, plan.peft, cfg.train_parts, plan.precision,
                                              cfg.quant, quant_device(plan.acc))
        if cfg.resume:
            safety.check_resume_tensors(plan.proj / "last.ckpt", model, trainable)
        init_note = adapter_init(cfg, model, plan.peft, base_sd)
        compile_note = compile_for_training(cfg, plan.acc, model, plan.rank0)  # --compile; '' without
        dataset, val_samples = build_data(plan, mcfg.vocab_size)
        saver = AdapterSaver(plan, model, trainable, fingerprint_of(base_sd), log,
                             sample_writer(cfg, mcfg.vocab_size))
        saver.hooks = [h for h in (make(cfg, log, plan.rank0) for make in save_hooks) if h is not None]
        steps = build_trainer(plan, model, trainable, dataset, val_samples, saver, log)
        if plan.rank0:
            write_run_header(plan, log, mcfg, model, trainable, op,
                             [dataset.summary(), quant_note, init_note, compile_note])
        try:
            fit(plan, steps, saver, log)
            return finish(plan, steps, model, trainable, base_sd, saver, log)
        finally:
            close_process_group()
    except BaseException:
        runlock.release(Path(cfg.proj_dir))
        safety.remove_created_if_empty(created)  # failed before writing anything: no empty proj_dir
        raise
    finally:
        runlock.release(Path(cfg.proj_dir))  # held from prepare_proj_dir on (rank 0)


def adapter_init(cfg: TrainConfig, model, peft: AdapterConfig, base_sd) -> str:
    """--adapter_init: start from a saved adapter (after inject); a log line, '' without it."""
    if not cfg.adapter_init:
        return ""
    from .adapter_init import load_adapter_init
    return load_adapter_init(model, peft, cfg.adapter_init, base_sd)


@dataclass
class TrainerParts:
    """What build_trainer makes and fit/finish use."""
    trainer: object
    module: FineTuneModule
    data: ResumableData
    events: StepEvents
    stop: StopRequest
    validator: object | None


def build_trainer(plan: Plan, model, trainable, dataset, val_samples, saver: AdapterSaver,
                  log: RunLog) -> TrainerParts:
    """Step 5: the Lightning trainer, the module, and the metric, step-event and saving callbacks."""
    import lightning as L

    cfg = plan.cfg
    total, offset = total_optimizer_steps(cfg)
    data = ResumableData(dataset)  # a resume from a mid-epoch save continues the same order
    from .preference_run import make_preference_validator, preference_step
    step = preference_step(plan, model)  # None for sft
    module = FineTuneModule(model, trainable, cfg, total, offset, dataset=data, preference=step)
    saver.module = module
    metrics = StepMetrics(log, offset, cfg.epoch_begin)
    save_cb = SaveAdapter(saver, log, metrics, lambda: plot_losses(plan.proj),
                          epoch_begin=cfg.epoch_begin, epoch_save=cfg.epoch_save, my_exit=cfg.my_exit)
    validator = (make_preference_validator(cfg, val_samples, step, saver, log, plan.rank0) if step
                 else make_validator(cfg, val_samples, saver, log, plan.rank0))
    stop = StopRequest()
    events = StepEvents(cfg, log, save_cb, data, offset, validator, stop, budget_steps(cfg, plan.world))
    bar, console = console_callbacks(cfg, metrics, offset, events.per_epoch, events.budget)
    trainer = L.Trainer(
        accelerator=plan.acc, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=lightning_strategy(cfg),
        precision=plan.precision, max_epochs=cfg.epoch_count,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=cfg.grad_clip or None, logger=make_loggers(cfg, plan.proj),
        enable_checkpointing=False, enable_progress_bar=bar,
        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
        callbacks=[metrics, *console, events, save_cb, *compile_callbacks(cfg, log)],
        default_root_dir=str(plan.proj),
    )
    if plan.acc == "cpu" and cfg.devices > 1:
        share_cpu_cores(cfg.devices, plan.rank0)
    return TrainerParts(trainer, module, data, events, stop, validator)


def make_validator(cfg: TrainConfig, val_samples, saver: AdapterSaver, log: RunLog, rank0: bool):
    """--val_file / --val_split: the Validator (None without validation data)."""
    if val_samples is None:
        return None
    from .validation import Validator
    best = (lambda: saver("best", track=False)) if cfg.save_best and not cfg.best_metric else None
    if rank0:
        log.line(f"validation: {len(val_samples)} samples from "
                 f"{cfg.val_file or f'--val_split {cfg.val_split}'}")
    return Validator(val_samples, cfg, log, best)


def fit(plan: Plan, steps: TrainerParts, saver: AdapterSaver, log: RunLog) -> None:
    """Step 6: train (resuming from last.ckpt with --resume)."""
    cfg, trainer = plan.cfg, steps.trainer
    loader = torch.utils.data.DataLoader(steps.data, batch_size=cfg.micro_bsz, shuffle=False,
                                         num_workers=cfg.num_workers, drop_last=False,
                                         collate_fn=steps.data.dataset.collate)
    ckpt = str(plan.proj / "last.ckpt") if cfg.resume else None
    if ckpt:
        silence_mid_epoch_resume_warning()
    nodes.announce_wait(trainer, cfg)
    try:
        # last.ckpt holds only tensors and plain values: load it as data, never as code
        trainer.fit(steps.module, loader, ckpt_path=ckpt, weights_only=True)
    except NonFiniteLoss as e:
        last = saver.saved[-1] if saver.saved else None
        kept = f"the last good adapter is {last}" if last else "no adapter had been saved yet"
        log.line(f"stopped: {e}")
        raise UserError(f"training stopped: {e}; {kept}; try a lower --lr_init") from None
    except RuntimeError as e:
        timed_out = nodes.wait_timed_out(e, trainer, cfg)
        if timed_out is None:
            raise
        raise timed_out from None


def finish(plan: Plan, steps: TrainerParts, model, trainable, base_sd, saver: AdapterSaver,
           log: RunLog) -> TrainResult:
    """Step 7: a signal stop reported, ranks agree, the optional merged model, the end of the log."""
    result = TrainResult(plan.proj, adapters=list(saver.saved), samples=list(saver.samples),
                         validation=steps.validator.history if steps.validator else [])
    if steps.events.stopped_by == "signal":
        report_interrupt(plan.cfg, log, result, steps.stop.name)
    params = dict(model.named_parameters())
    with ds.full_params(steps.trainer, [params[n] for n in trainable]):  # every rank enters
        check_ranks_in_sync(steps.trainer, model, trainable, log)
        if plan.rank0 and plan.cfg.merge_output:
            result.merged = merge_to_file(base_sd, saver.tensors(), plan.peft, plan.cfg.merge_output)
            log.line(f"merged model written to {result.merged}")
    if plan.rank0:
        log.line(f"finished {_dt.datetime.now().isoformat(timespec='seconds')}")
    return result


