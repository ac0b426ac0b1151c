"""`rwkvft train`: load the base, inject the adapter, build the data, run Lightning, save."""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import TrainConfig
from ..errors import UserError
from ..utils import atomic_path, same_file
from .callbacks import RunLog, SaveAdapter, StepMetrics, plot_losses
from .module import FineTuneModule, NonFiniteLoss, total_optimizer_steps

RUN_FILES = ("last.ckpt", "train_config.json", "loss.jsonl")
# settings a resumed run must share with the run it continues
RESUME_KEYS = ("load_model", "peft", "peft_config", "train_parts", "ctx_len", "micro_bsz",
               "epoch_steps", "accumulate_grad_batches", "data_file", "data_type", "dataload",
               "random_seed", "lr_init", "lr_final", "lr_schedule", "warmup_steps", "epoch_begin")


@dataclass
class TrainResult:
    proj_dir: Path
    adapters: list = field(default_factory=list)
    merged: Path | None = None


def _rank_zero() -> bool:
    # Lightning re-executes the command for ranks > 0 (DDP on CPU) and marks them in
    # its own rank helper; only rank 0 may create or check the run folder.
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    return getattr(rank_zero_only, "rank", 0) == 0


def _existing_run(proj: Path) -> list[str]:
    found = [n for n in RUN_FILES if (proj / n).exists()]
    found += sorted(p.name for p in proj.glob("rwkv-*.pth")) + sorted(p.name for p in proj.glob("rwkv-*.safetensors"))
    return found


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
    found = _existing_run(proj)
    if cfg.resume:
        if not (proj / "last.ckpt").exists():
            raise UserError(f"--resume: nothing to resume in {proj} (no last.ckpt); "
                            f"start without --resume")
        _check_resume_config(cfg, proj)
        _check_readable_checkpoint(proj / "last.ckpt")
    elif found and not cfg.overwrite:
        raise UserError(f"--proj_dir {proj} already holds a run ({', '.join(found[:3])}); "
                        f"continue it with --resume, pick another --proj_dir, or pass --overwrite")
    elif found:
        for name in ("last.ckpt", "loss.jsonl"):
            (proj / name).unlink(missing_ok=True)


def _check_readable_checkpoint(path: Path) -> None:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file cannot be resumed from
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"--resume: {path} cannot be read ({first[:120]}); it is damaged or "
                        f"not ours: restore it, or start a new run with --overwrite") from None


def _check_resume_config(cfg: TrainConfig, proj: Path) -> None:
    saved_path = proj / "train_config.json"
    if not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    now = json.loads(cfg.to_json())
    for k in RESUME_KEYS:
        if k in saved and saved[k] != now[k]:
            raise UserError(f"--resume: --{k} is {now[k]!r} but the run in {proj} used "
                            f"{saved[k]!r}; use the same value to continue it")


def resolve_hardware(cfg: TrainConfig) -> tuple[str, str]:
    """(lightning accelerator, lightning precision) with clear errors for mismatches."""
    acc = {"cuda": "gpu"}.get(cfg.accelerator, cfg.accelerator)
    if acc == "auto":
        acc = "gpu" if torch.cuda.is_available() else "cpu"
    if acc == "gpu" and not torch.cuda.is_available():
        raise UserError("--accelerator gpu but no CUDA GPU is visible; use --accelerator cpu")
    if cfg.strategy.startswith("deepspeed"):
        if acc == "cpu":
            raise UserError(f"--strategy {cfg.strategy} needs NVIDIA GPUs; on CPU use "
                            f"--strategy ddp (or auto for one process)")
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise UserError(f"--strategy {cfg.strategy} needs DeepSpeed: "
                            f"pip install 'rwkvft[deepspeed]'") from None
    precision = cfg.precision or ("bf16" if acc == "gpu" else "fp32")
    if precision == "fp16" and acc == "cpu":
        raise UserError("--precision fp16 needs a GPU; on CPU use fp32 (or bf16, which is slow on CPU)")
    if precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    lightning_precision = {"fp32": "32-true", "tf32": "32-true", "bf16": "bf16-mixed",
                           "fp16": "16-mixed"}[precision]
    return acc, lightning_precision


def resolve_wkv_op(cfg: TrainConfig, acc: str, version: str) -> str:
    """The WKV op for this model version on this accelerator (--op auto falls back with a note)."""
    from ..kernels import resolve_op
    op, note = resolve_op(cfg.op, acc == "gpu", version)
    if note:  # one line saying why --op auto fell back
        print(f"rwkvft: {note}")
    return op


def load_base(cfg: TrainConfig):
    """(base state dict as read (mmap), its ModelConfig, an fp32 model holding it)."""
    from ..checkpoint.rwkv_format import check_against, infer_config, read_state_dict
    from ..models import load_model

    base_sd = read_state_dict(cfg.load_model)
    mcfg = infer_config(base_sd)
    check_against(mcfg, n_layer=cfg.n_layer, n_embd=cfg.n_embd, vocab_size=cfg.vocab_size,
                  head_size=cfg.head_size_a, version=cfg.my_testing)
    model = load_model(cfg.load_model, dtype=torch.float32).train()
    return base_sd, mcfg, model


def resolve_data_type(cfg: TrainConfig) -> str:
    """--data_type auto: from the file name (the tutorial always names it explicitly)."""
    if cfg.data_type != "auto":
        return cfg.data_type
    p = Path(cfg.data_file)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".npy":
        return "numpy"
    if suffix in (".parquet",):
        return "sft"
    if suffix in (".txt", ".md"):
        return "utf-8"
    if suffix in (".bin", ".idx") or (Path(f"{p}.bin").exists() and Path(f"{p}.idx").exists()):
        return "binidx"
    raise UserError(f"cannot tell the format of --data_file {p}; pass --data_type "
                    f"(binidx, jsonl, utf-8, utf-16le, numpy, uint16, sft, dummy)")


def build_data(cfg: TrainConfig, vocab_size: int, world_size: int):
    from ..data import DataConfig, build_dataset

    data_type = resolve_data_type(cfg)
    dataload = cfg.dataload
    if dataload == "auto":  # records are documents; token streams are windows
        dataload = "pad" if data_type in ("jsonl", "sft") else "get"
    data_file = cfg.data_file
    if data_type == "binidx" and Path(data_file).suffix in (".bin", ".idx"):
        data_file = str(Path(data_file).with_suffix(""))
    dcfg = DataConfig(data_file=data_file, data_type=data_type, ctx_len=cfg.ctx_len,
                      vocab_size=vocab_size, micro_bsz=cfg.micro_bsz, epoch_steps=cfg.epoch_steps,
                      dataload=dataload, loss_mask=cfg.loss_mask, random_seed=cfg.random_seed,
                      sft_field=tuple(cfg.sft_field) if cfg.sft_field else None,
                      window_sampling=cfg.window_sampling, long_docs=cfg.long_docs,
                      user_role=cfg.user_role, assistant_role=cfg.assistant_role,
                      system_role=cfg.system_role, text_field=cfg.text_field,
                      max_bad_fraction=cfg.max_bad_fraction, progress=cfg.progress)
    dataset = build_dataset(dcfg, rank=0, world_size=world_size)
    dataset.check_ctx_len()
    return dataset


def cast_frozen(model, precision: str) -> None:
    """Keep the frozen base in the training precision (no fp32 copy); adapters stay fp32."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    if dtype is None:
        return
    for p in model.parameters():
        if not p.requires_grad and p.is_floating_point():
            p.data = p.data.to(dtype)


def _quantize(model, cfg: TrainConfig, acc: str) -> str:
    """--quant: quantize the frozen weights under the adapters (on the GPU when training on
    one: bitsandbytes' CPU quantizer is slow). Returns a log line ('' for --quant none)."""
    if cfg.quant == "none":
        return ""
    from ..adapters.quant import quantize_base
    device = torch.device("cuda", torch.cuda.current_device()) if acc == "gpu" else None
    q = quantize_base(model, cfg.quant, device)
    return (f"quant: {cfg.quant} base weights in {q['layers']} adapted layers, "
            f"{q['float_bytes'] / 2**20:.1f} MiB -> {q['quant_bytes'] / 2**20:.1f} MiB")


def _strategy(cfg: TrainConfig):
    """The Lightning strategy; DDP must not broadcast a quantized base (GBs of buffers) every step."""
    if cfg.quant != "none" and cfg.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy
        return DDPStrategy(broadcast_buffers=False)
    return cfg.strategy


def _loggers(cfg: TrainConfig, proj: Path):
    loggers = []
    if cfg.wandb:
        try:
            from lightning.pytorch.loggers import WandbLogger
            import wandb  # noqa: F401
        except ImportError:
            raise UserError("--wandb needs the wandb package: pip install 'rwkvft[wandb]'") from None
        loggers.append(WandbLogger(project=cfg.wandb, save_dir=str(proj)))
    if cfg.tensorboard:
        try:
            from lightning.pytorch.loggers import TensorBoardLogger
            TensorBoardLogger(save_dir=str(proj), name="tb")
        except (ImportError, ModuleNotFoundError):
            raise UserError("--tensorboard needs the tensorboard package: "
                            "pip install 'rwkvft[tensorboard]'") from None
        loggers.append(TensorBoardLogger(save_dir=str(proj), name="tb"))
    return loggers or False


def train(cfg: TrainConfig) -> TrainResult:
    import lightning as L
    from ..adapters import adapter_state_dict, fingerprint, format_trainable, inject, parse_peft, \
        save_adapter

    rank0 = _rank_zero()
    proj = Path(cfg.proj_dir)
    acc, precision = resolve_hardware(cfg)
    acfg = parse_peft(cfg.peft, cfg.peft_config)
    if cfg.merge_output and same_file(cfg.load_model, cfg.merge_output):
        raise UserError(f"--merge_output {cfg.merge_output} is the base model; choose another path")
    if rank0:
        prepare_proj_dir(cfg)
    log = RunLog(proj, enabled=rank0)
    base_sd, mcfg, model = load_base(cfg)
    if acfg.method == "state" and cfg.merge_output:  # refuse before training, not after
        from ..checkpoint.state_export import refuse_baked_x070
        refuse_baked_x070(mcfg.version)
    op = resolve_wkv_op(cfg, acc, mcfg.version)  # the version decides which ops can run it
    model.op, model.grad_cp = op, bool(cfg.grad_cp)
    L.seed_everything(cfg.random_seed, workers=True, verbose=False)
    trainable = inject(model, acfg, list(cfg.train_parts))
    cast_frozen(model, precision)
    quant_note = _quantize(model, cfg, acc)
    world = cfg.devices * cfg.num_nodes
    dataset = build_data(cfg, mcfg.vocab_size, world)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.micro_bsz, shuffle=False,
                                         num_workers=cfg.num_workers, drop_last=False)
    total, offset = total_optimizer_steps(cfg)
    module = FineTuneModule(model, trainable, cfg, total, offset)
    module.dataset = dataset
    base_fp = fingerprint(base_sd)
    result = TrainResult(proj)

    if rank0:
        _write_run_header(cfg, log, mcfg, format_trainable(model, trainable), acc, precision, op)
        log.line(dataset.summary())
        if quant_note:
            log.line(quant_note)

    def save_fn(epoch_no: int) -> Path:
        path = proj / f"rwkv-{epoch_no}.{cfg.adapter_format}"
        sd = {k: v.detach().float().cpu().clone() for k, v in adapter_state_dict(model, trainable).items()}
        try:
            save_adapter(path, sd, acfg, base_fp)
        except OSError as e:
            prev = result.adapters[-1].name if result.adapters else "none yet"
            raise UserError(f"could not save the adapter to {path} ({e.strerror or e}); "
                            f"the previous save ({prev}) is intact") from None
        result.adapters.append(path)
        log.line(f"saved {path}")
        return path

    metrics = StepMetrics(log, cfg.micro_bsz * cfg.ctx_len, world, offset)
    saver = SaveAdapter(save_fn, log, metrics, lambda: plot_losses(proj))
    trainer = L.Trainer(
        accelerator=acc, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=_strategy(cfg),
        precision=precision, max_epochs=cfg.epoch_count,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=cfg.grad_clip or None, logger=_loggers(cfg, proj),
        enable_checkpointing=False, enable_progress_bar=cfg.progress,
        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
        callbacks=[metrics, saver], default_root_dir=str(proj),
    )
    if acc == "cpu" and cfg.devices > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.devices))
    ckpt = str(proj / "last.ckpt") if cfg.resume else None
    try:
        # last.ckpt holds only tensors and plain values: load it as data, never as code
        trainer.fit(module, loader, ckpt_path=ckpt, weights_only=True)
    except NonFiniteLoss as e:
        last = result.adapters[-1] if result.adapters else None
        kept = f"the last good adapter is {last}" if last else "no adapter had been saved yet"
        log.line(f"stopped: {e}")
        raise UserError(f"training stopped: {e}; {kept}; try a lower --lr_init") from None
    _check_ranks_in_sync(trainer, model, trainable, log)
    if rank0 and cfg.merge_output:
        result.merged = merge_to_file(base_sd, adapter_state_dict(model, trainable), acfg,
                                      cfg.merge_output)
        log.line(f"merged model written to {result.merged}")
    if rank0:
        log.line(f"finished {_dt.datetime.now().isoformat(timespec='seconds')}")
    return result


def merge_to_file(base_sd, adapter_sd, acfg, output):
    from ..checkpoint.merge import merge_state_dict
    from ..checkpoint.rwkv_format import write_state_dict

    adapter_sd = {k: v.detach().float().cpu() for k, v in adapter_sd.items()}
    merged = merge_state_dict(base_sd, adapter_sd, acfg)
    write_state_dict(merged, output, dtype=torch.bfloat16)
    return Path(output)


def _check_ranks_in_sync(trainer, model, trainable, log) -> None:
    """With several processes, every rank must end with the same adapter; record it."""
    if trainer.world_size <= 1:
        return
    params = dict(model.named_parameters())
    local = torch.tensor([sum(float(params[n].detach().double().sum()) for n in trainable)],
                         dtype=torch.float64)
    gathered = trainer.strategy.all_gather(local.to(trainer.strategy.root_device)).flatten().cpu()
    sums = [float(x) for x in gathered]
    log.line(f"adapter checksum per rank: {json.dumps(sums)}")
    if max(sums) - min(sums) > 1e-9 * max(1.0, max(abs(s) for s in sums)):
        raise UserError(f"ranks ended with different adapters (checksums {sums}); please report this")


def _write_run_header(cfg, log, mcfg, summary, acc, precision, op) -> None:
    proj = Path(cfg.proj_dir)
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
