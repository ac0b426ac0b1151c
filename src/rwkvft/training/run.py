"""`rwkvft train`: one recipe of named steps, each a function here.

    plan_run        resolve and validate every option (nothing is read yet)
    prepare_proj_dir / RunLog   the run folder (refuses to clobber a run)
    load_base       read the base checkpoint, check user-given sizes, build the fp32 model
    prepare_model   inject the method, cast the frozen base, quantize it   (model_prep.py;
                    bench uses it too)
    build_data      the dataset
    build_trainer   the Lightning trainer, module and callbacks
    fit             train; a non-finite loss stops with the last good save named
    finish          check ranks agree, optionally merge, close the log
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..adapters import AdapterConfig, PeftMethod
from ..config import TrainConfig
from ..data.from_flags import data_config
from ..errors import Checks, UserError
from ..utils import atomic_path, note
from . import ds, nodes, resume_rules, runlock, safety
from .model_prep import prepare_model, quant_device
from .callbacks import RunLog, SaveAdapter, StepMetrics, plot_losses, truncate_loss_log
from .console import console_callbacks, share_cpu_cores
from .interrupt import Interrupted, StopRequest
from .module import FineTuneModule, NonFiniteLoss, total_optimizer_steps
from .steps import ResumableData, StepEvents, budget_steps, silence_mid_epoch_resume_warning

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
        checks.run(_checkpoint_sizes, cfg)
    checks.raise_if_any()
    if acc == "cpu" and precision == "bf16-mixed":
        note("--precision bf16 on CPU is about 100x slower than fp32 (CPUs have no fast bf16 "
             "matmul); on CPU pass --precision fp32 or leave it out")
    from .preference_run import read_preference_data
    pairs = read_preference_data(cfg, method)  # None for sft; before any model is loaded
    return Plan(cfg, acc, precision, peft, method, data,
                cfg.devices * cfg.num_nodes, _rank_zero(), val_data, pairs)


def _checkpoint_sizes(cfg: TrainConfig) -> None:
    """The size flags (--n_layer, --n_embd, ...) against the checkpoint, as load_base checks them."""
    from ..formats import read_state_dict
    from ..models.schema import check_against, infer_config
    check_against(infer_config(read_state_dict(cfg.load_model)), n_layer=cfg.n_layer,
                  n_embd=cfg.n_embd, vocab_size=cfg.vocab_size, head_size=cfg.head_size_a,
                  version=cfg.my_testing)


def _rank_zero() -> bool:
    # Lightning re-executes the command for ranks > 0 (DDP on CPU) and marks them in
    # its own rank helper; only rank 0 may create or check the run folder.
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    return getattr(rank_zero_only, "rank", 0) == 0


def prepare_proj_dir(cfg: TrainConfig) -> None:
    proj = Path(cfg.proj_dir)
    if proj.exists() and not proj.is_dir():
        raise UserError(f"--proj_dir {proj} is a file; give a folder")
    try:
        proj.mkdir(parents=True, exist_ok=True)
        probe = proj / ".rwkvft-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"--proj_dir {proj} is not writable ({e.strerror}); choose another folder") from None
    runlock.hold(proj)  # one run per folder, before anything in it is removed or checked
    safety.clean_stale_temps(proj)
    found = safety.existing_run(proj)
    if cfg.resume:
        if not (proj / "last.ckpt").exists():
            raise UserError(f"--resume: nothing to resume in {proj} (no last.ckpt); "
                            f"start without --resume")
        resume_rules.check_resume_flags(cfg, proj)  # one table: what must match, what may change
        resumed_at = safety.read_resume_checkpoint(proj / "last.ckpt").get("global_step", 0)
        truncate_loss_log(proj, total_optimizer_steps(cfg)[1] + int(resumed_at))
    elif found and not cfg.overwrite:
        raise UserError(f"--proj_dir {proj} already holds a run ({', '.join(found[:3])}); "
                        f"continue it with --resume, pick another --proj_dir, or pass --overwrite")
    elif found:
        safety.remove_run_files(cfg, proj)


def resolve_hardware(cfg: TrainConfig) -> tuple[str, str]:
    """(lightning accelerator, lightning precision) with clear errors for mismatches."""
    checks = Checks()   # a CPU-only machine given the tutorial's GPU flags hears of them all
    acc = {"cuda": "gpu"}.get(cfg.accelerator, cfg.accelerator)
    if acc == "auto":
        acc = "gpu" if torch.cuda.is_available() else "cpu"
    if acc == "gpu" and not torch.cuda.is_available():
        checks.add("--accelerator gpu but no CUDA GPU is visible; use --accelerator cpu")
    if cfg.strategy.startswith("deepspeed"):
        if acc == "cpu" or not torch.cuda.is_available():
            checks.add(f"--strategy {cfg.strategy} needs NVIDIA GPUs; on CPU use "
                       f"--strategy ddp (or auto for one process)")
        else:
            try:
                import deepspeed  # noqa: F401
            except ImportError:
                checks.add(f"--strategy {cfg.strategy} needs DeepSpeed: pip install 'rwkvft[deepspeed]'")
    precision = cfg.precision or ("bf16" if acc == "gpu" else "fp32")
    if precision == "fp16" and (acc == "cpu" or not torch.cuda.is_available()):
        checks.add("--precision fp16 needs a GPU; on CPU use fp32 (or bf16, which is slow on CPU)")
    checks.raise_if_any()
    if precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    lightning_precision = {"fp32": "32-true", "tf32": "32-true", "bf16": "bf16-mixed",
                           "fp16": "16-mixed"}[precision]
    return acc, lightning_precision


def check_op_name(op: str, acc: str) -> None:
    """--op checks that need no model: a known name, and a GPU op only with a GPU. Which ops
    run a given model version is decided by resolve_wkv_op once the version is known."""
    from ..kernels import CPU_OPS, GPU_OPS
    if op != "auto" and op not in CPU_OPS + GPU_OPS:
        raise UserError(f"unknown --op {op!r}; choose one of auto, {', '.join(CPU_OPS + GPU_OPS)}")
    if op in GPU_OPS and acc != "gpu":
        raise UserError(f"--op {op} needs an NVIDIA GPU; use --op chunked (or auto) on CPU")


def resolve_wkv_op(cfg: TrainConfig, acc: str, version: str) -> str:
    """The WKV op for this model version on this accelerator (--op auto falls back with a note)."""
    from ..kernels import resolve_op
    op, fallback = resolve_op(cfg.op, acc == "gpu", version)
    if fallback:  # one line saying why --op auto fell back (once, not from every rank)
        note(fallback)
    return op


def load_base(cfg: TrainConfig):
    """Step 2: (base state dict as read (mmap), its ModelConfig, an fp32 model holding it)."""
    from ..formats import read_state_dict
    from ..formats import load_model
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


def _strategy(cfg: TrainConfig):
    """The Lightning strategy; DDP must not broadcast a quantized base (GBs of buffers) every
    step, DeepSpeed needs rwkvft's settings (ds.py)."""
    if cfg.num_nodes > 1:
        return nodes.multi_node_strategy(cfg)
    if ds.is_deepspeed(cfg.strategy):
        return ds.deepspeed_strategy(cfg.strategy)
    # "auto" with several devices is DDP too (Lightning picks DDPStrategy with no arguments)
    is_ddp = cfg.strategy in ("ddp", "ddp_spawn") or (cfg.strategy == "auto" and cfg.devices > 1)
    if cfg.quant != "none" and is_ddp:
        from lightning.pytorch.strategies import DDPStrategy
        return DDPStrategy(broadcast_buffers=False,
                           start_method="spawn" if cfg.strategy == "ddp_spawn" else "popen")
    return cfg.strategy


def check_loggers(cfg: TrainConfig) -> None:
    """--wandb / --tensorboard need their packages; say so before anything is loaded."""
    import importlib.util
    if cfg.wandb and importlib.util.find_spec("wandb") is None:
        raise UserError("--wandb needs the wandb package: pip install 'rwkvft[wandb]'")
    if cfg.tensorboard and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        raise UserError("--tensorboard needs the tensorboard package: pip install 'rwkvft[tensorboard]'")


def _loggers(cfg: TrainConfig, proj: Path):
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
    loggers = []
    if cfg.wandb:
        loggers.append(WandbLogger(project=cfg.wandb, save_dir=str(proj)))
    if cfg.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(proj), name="tb"))
    return loggers or False


def train(cfg: TrainConfig) -> TrainResult:
    """The recipe (module docstring): each step is one function below."""
    created = safety.folders_to_create(cfg.proj_dir)
    try:
        return _train(cfg)
    except BaseException:
        runlock.release(Path(cfg.proj_dir))
        safety.remove_created_if_empty(created)  # failed before writing anything: no empty proj_dir
        raise
    finally:
        runlock.release(Path(cfg.proj_dir))  # held from prepare_proj_dir on (rank 0)


def _train(cfg: TrainConfig) -> TrainResult:
    import lightning as L

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
    dataset, val_samples = build_data(plan, mcfg.vocab_size)
    saver = AdapterSaver(plan, model, trainable, fingerprint_of(base_sd), log,
                         sample_writer(cfg, mcfg.vocab_size))
    saver.task_scorer = task_scorer(cfg, log, plan.rank0)
    steps = build_trainer(plan, model, trainable, dataset, val_samples, saver, log)
    if plan.rank0:
        _write_run_header(plan, log, mcfg, model, trainable, op, [dataset.summary(), quant_note, init_note])
    try:
        fit(plan, steps, saver, log)
        return finish(plan, steps, model, trainable, base_sd, saver, log)
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """Destroy the DDP process group Lightning opened (it leaves it open): left to interpreter
    exit, gloo's threads are torn down in an arbitrary order and the process sometimes aborts
    ("terminate called without an active exception", status -6) after a finished run."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def adapter_init(cfg: TrainConfig, model, peft: AdapterConfig, base_sd) -> str:
    """--adapter_init: start from a saved adapter (after inject); a log line, '' without it."""
    if not cfg.adapter_init:
        return ""
    from .adapter_init import load_adapter_init
    return load_adapter_init(model, peft, cfg.adapter_init, base_sd)


def fingerprint_of(base_sd) -> dict:
    from ..adapters.fingerprint import fingerprint
    return fingerprint(base_sd)


class AdapterSaver:
    """Writes rwkv-{epoch}.{pth,safetensors} (+ adapter_config.json) on rank 0 and remembers
    what it wrote. For a full_model method (--peft none) the file is the whole model."""

    def __init__(self, plan: Plan, model, trainable: list[str], base_fp: dict, log: RunLog,
                 sampler=None):
        self.plan, self.model, self.trainable = plan, model, list(trainable)
        self.base_fp, self.log = base_fp, log
        self.saved: list[Path] = []
        self.sampler = sampler              # --sample_prompts: continuations at every save
        self.samples: list = []
        self.module = None                  # the FineTuneModule, once built (for the samples)
        self.task_scorer = None             # --eval_tasks: evaluation.during_training.TaskScorer

    def tensors(self) -> dict:
        """The tensors to save. Under ZeRO-3 the caller gathers them first (ds.full_params):
        a shard reads as an empty tensor, which is refused here rather than saved."""
        from ..adapters import adapter_state_dict
        if self.plan.method.full_model:   # every tensor of the model, official names and shapes
            out = {k: v.detach().float().cpu().clone() for k, v in self.model.state_dict().items()}
        else:
            out = {k: v.detach().float().cpu().clone()
                   for k, v in adapter_state_dict(self.model, self.trainable).items()}
        empty = [k for k, v in out.items() if v.numel() == 0]
        if empty:
            raise UserError(f"the tensors to save {empty[:3]} are empty (ZeRO-3 shards that were "
                            f"not gathered); please report this")
        return out

    def __call__(self, label, track: bool = True) -> Path:
        """Write rwkv-{label} (label: epoch number, "step{S}" or "best"; track=False for best,
        which is not "the adapter" of the run)."""
        from ..formats import save_adapter
        path = self.plan.proj / f"rwkv-{label}.{self.plan.cfg.adapter_format}"
        try:
            save_adapter(path, self.tensors(), self.plan.peft, self.base_fp)
        except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError
            prev = self.saved[-1].name if self.saved else "none yet"
            raise UserError(f"could not save the adapter to {path} ({safety.save_error_text(e)}); "
                            f"the previous save ({prev}) is intact") from None
        if not track:
            return path
        self.saved.append(path)
        self.log.say(f"saved {path}")
        if self.sampler is not None and self.module is not None:
            self._write_samples(path)
        if self.task_scorer is not None and self.module is not None:   # --eval_tasks
            m = self.module
            self.task_scorer(self.model, path, m.global_step + m.step_offset, m.current_epoch, m.device,
                             m.trainer.precision_plugin.forward_context, lambda: self("best", track=False))
        return path

    def _write_samples(self, path: Path) -> None:
        m = self.module
        step = m.global_step + m.step_offset
        self.sampler.write(self.model, f"step {step}: {path.name}", m.device,
                           m.trainer.precision_plugin.forward_context)
        self.log.line(f"samples for {path.name} written to {self.sampler.path}")
        self.samples.append((path.name, list(self.sampler.last)))


def sample_writer(cfg: TrainConfig, vocab_size: int):
    """--sample_prompts: the writer of samples.md (None without the flag)."""
    if not cfg.sample_prompts:
        return None
    from ..data.formats import Roles
    from .samples import SampleWriter, read_prompts
    writer = SampleWriter(read_prompts(cfg.sample_prompts, Roles(cfg.user_role, cfg.assistant_role,
                                                                  cfg.system_role, cfg.chat_template,
                                                                  cfg.train_on_think)),
                          cfg.proj_dir, cfg.sample_tokens)
    writer.check_model(vocab_size)
    return writer


def task_scorer(cfg: TrainConfig, log: RunLog, rank0: bool):
    """--eval_tasks: the scorer of each saved adapter (None without the flag, and off rank 0);
    the task names are checked now, before any training."""
    if not cfg.eval_tasks or not rank0:
        return None
    from ..evaluation.during_training import TaskScorer
    scorer = TaskScorer(cfg, log)
    scorer.check()
    return scorer


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
        accelerator=plan.acc, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=_strategy(cfg),
        precision=plan.precision, max_epochs=cfg.epoch_count,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=cfg.grad_clip or None, logger=_loggers(cfg, plan.proj),
        enable_checkpointing=False, enable_progress_bar=bar,
        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
        callbacks=[metrics, *console, events, save_cb], default_root_dir=str(plan.proj),
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
        _report_interrupt(plan.cfg, log, result, steps.stop.name)
    params = dict(model.named_parameters())
    with ds.full_params(steps.trainer, [params[n] for n in trainable]):  # every rank enters
        _check_ranks_in_sync(steps.trainer, model, trainable, log)
        if plan.rank0 and plan.cfg.merge_output:
            result.merged = merge_to_file(base_sd, saver.tensors(), plan.peft, plan.cfg.merge_output)
            log.line(f"merged model written to {result.merged}")
    if plan.rank0:
        log.line(f"finished {_dt.datetime.now().isoformat(timespec='seconds')}")
    return result


def _report_interrupt(cfg: TrainConfig, log, result, name: str) -> None:
    """After a clean stop on a signal: say what was saved and how to continue; exit 130."""
    import sys
    saved = result.adapters[-1] if result.adapters else None
    log.line(f"interrupted by {name}; saved {saved} and last.ckpt")
    if _rank_zero():
        print(f"rwkvft: stopped on {name}: saved {saved} and {Path(cfg.proj_dir) / 'last.ckpt'}; "
              f"continue with the same command plus --resume", file=sys.stderr, flush=True)
    raise Interrupted()


def merge_to_file(base_sd, adapter_sd, acfg, output):
    from ..adapters.merge import merge_state_dict
    from ..formats import write_state_dict

    adapter_sd = {k: v.detach().float().cpu() for k, v in adapter_sd.items()}
    merged = merge_state_dict(base_sd, adapter_sd, acfg)
    write_state_dict(merged, output, dtype=torch.bfloat16)
    return Path(output)


def _check_ranks_in_sync(trainer, model, trainable, log) -> None:
    """With several processes, every rank must end with the same adapter; record it."""
    if trainer.world_size <= 1:
        return
    params = dict(model.named_parameters())
    empty = [n for n in trainable if params[n].numel() == 0]
    if empty:  # zeros compare equal on every rank: an ungathered ZeRO-3 shard must not pass
        raise UserError(f"the trained tensors {empty[:3]} are empty on this rank; please report this")
    local = torch.tensor([sum(float(params[n].detach().double().sum()) for n in trainable)],
                         dtype=torch.float64)
    gathered = trainer.strategy.all_gather(local.to(trainer.strategy.root_device)).flatten().cpu()
    sums = [float(x) for x in gathered]
    log.line(f"adapter checksum per rank: {json.dumps(sums)}")
    if max(sums) - min(sums) > 1e-9 * max(1.0, max(abs(s) for s in sums)):
        raise UserError(f"ranks ended with different adapters (checksums {sums}); please report this")


def _write_run_header(plan: Plan, log, mcfg, model, trainable, op, notes) -> None:
    from ..adapters import format_trainable
    from ..adapters.full import memory_note

    cfg, proj, acc, precision = plan.cfg, plan.proj, plan.acc, plan.precision
    summary = format_trainable(model, trainable)
    with atomic_path(proj / "train_config.json") as tmp:
        tmp.write_text(cfg.to_json(), encoding="utf-8")
    log.line(f"NEW RUN {_dt.datetime.now().isoformat(timespec='seconds')}")
    log.line(f"model: {mcfg.version} n_layer={mcfg.n_layer} n_embd={mcfg.n_embd} "
             f"vocab={mcfg.vocab_size} head_size={mcfg.head_size} from {cfg.load_model}")
    log.line(f"hardware: accelerator={acc} devices={cfg.devices} strategy={cfg.strategy} "
             f"precision={precision} op={op} grad_cp={cfg.grad_cp}")
    log.line(summary)
    log.line("config: " + json.dumps(json.loads(cfg.to_json()), sort_keys=True))
    print(summary)
    for note in notes:
        if note:
            log.say(note)  # the data summary and skipped records: console too
    if plan.method.full_model and acc == "gpu":
        warning = memory_note(sum(p.numel() for p in model.parameters()), cfg.strategy)
        log.line(warning)
        print(f"rwkvft: {warning}")
