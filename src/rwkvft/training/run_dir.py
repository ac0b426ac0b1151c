"""The run folder: created and checked before anything is written (`--resume` / `--overwrite`),
and the run header (train_config.json and the first lines of train_log.txt)."""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from ..errors import UserError
from ..utils import atomic_path
from . import resume_rules, runlock, safety
from .callbacks import truncate_loss_log
from .module import total_optimizer_steps

def rank_zero() -> bool:
    # Lightning re-executes the command for ranks > 0 (DDP on CPU) and marks them in
    # its own rank helper; only rank 0 may create or check the run folder.
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    return getattr(rank_zero_only, "rank", 0) == 0


def prepare_proj_dir(cfg) -> None:
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


def write_run_header(plan, log, mcfg, model, trainable, op, notes) -> None:
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
