"""What a run may touch in --proj_dir and beside it: the files a run writes, --overwrite,
--merge_output, stale temp files, the --resume checks, and the base model's own values.

One list (`RUN_FILE_PATTERNS`) says which files a run writes; `--overwrite` deletes exactly those
(README "What lands in --proj_dir"), and nothing else in the folder is ever removed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch

from ..errors import UserError, quote
from ..utils import same_file
from .saved_config import typed_train_config

# Every file a training run writes into --proj_dir (regular expressions on the file name).
RUN_FILE_PATTERNS = (r"rwkv-(\d+|step\d+|best)\.(pth|safetensors)", r"adapter_config\.json",
                     r"last\.ckpt", r"train_config\.json", r"train_log\.txt", r"loss\.jsonl",
                     r"loss\.png", r"samples\.md")
# A run's files are "a run" (need --resume or --overwrite); the log alone is not.
_RUN_MARKERS = (r"rwkv-\d+\.pth", r"rwkv-\d+\.safetensors", r"last\.ckpt", r"train_config\.json",
                r"loss\.jsonl")
_RUN_FILE = re.compile("|".join(f"(?:{p})" for p in RUN_FILE_PATTERNS))
_MARKER = re.compile("|".join(f"(?:{p})" for p in _RUN_MARKERS))
# Temp names of our own writers: atomic_path's ".NAME.<random>.tmp", the checkpoint's
# ".last.ckpt.tmp" and the writability probe. A kill leaves them; nobody else writes them.
_STALE = re.compile(r"\.(?:" + "|".join(RUN_FILE_PATTERNS) + r")(?:\.[A-Za-z0-9_]+)?\.tmp"
                    r"|\.rwkvft-write-test")
# Under DeepSpeed last.ckpt (and so its temp) is a folder; the previous one waits here while
# the new one is renamed into place (install_checkpoint).
_CKPT_DIRS = ("last.ckpt", ".last.ckpt.tmp")
_OLD_CKPT = ".last.ckpt.old"


def run_files(proj: Path) -> list[Path]:
    """The files of a run present in `proj` (sorted by name); last.ckpt may be a folder."""
    if not proj.is_dir():
        return []
    return sorted(p for p in proj.iterdir() if _RUN_FILE.fullmatch(p.name)
                  and (p.is_file() or (p.is_dir() and p.name == "last.ckpt")))


def existing_run(proj: Path) -> list[str]:
    """Names of the files that mark `proj` as holding a run (empty: a fresh folder)."""
    return [p.name for p in run_files(proj) if _MARKER.fullmatch(p.name)]


def clean_stale_temps(proj: Path) -> list[str]:
    """Delete temp files of our own naming left by a killed run; returns their names. A run
    killed between install_checkpoint's two renames left the previous last.ckpt (complete)
    as .last.ckpt.old: it becomes last.ckpt again."""
    old, ckpt = proj / _OLD_CKPT, proj / "last.ckpt"
    if old.exists() and not ckpt.exists():
        os.replace(old, ckpt)
    removed = []
    for p in sorted(proj.iterdir()) if proj.is_dir() else []:
        stale_dir = p.is_dir() and p.name in (_CKPT_DIRS[1], _OLD_CKPT)
        if (p.is_file() and (_STALE.fullmatch(p.name) or p.name == _OLD_CKPT)) or stale_dir:
            remove_path(p)
            removed.append(p.name)
    return removed


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def install_checkpoint(tmp: Path, ckpt: Path) -> None:
    """Make the complete `tmp` (a file, or DeepSpeed's folder) the new `ckpt`. A file is one
    atomic rename. A folder cannot replace a non-empty folder, so the previous one first moves
    aside to .last.ckpt.old and is deleted only after the new one is in place; a kill between
    the two renames leaves it there, and clean_stale_temps puts it back."""
    if not (tmp.is_dir() or ckpt.is_dir()):
        tmp.replace(ckpt)
        return
    old = ckpt.with_name(_OLD_CKPT)
    remove_path(old)
    if ckpt.exists():
        os.replace(ckpt, old)
    os.replace(tmp, ckpt)
    remove_path(old)


def folders_to_create(path) -> list[Path]:
    """The folders a run will create for --proj_dir `path` (missing ones, outermost first)."""
    missing, p = [], Path(path).absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing[::-1]


def remove_created_if_empty(created: list[Path]) -> None:
    """A run that failed before training removes the (still empty) folders it created, so the
    next try is not refused or confused by them; a folder holding anything stays."""
    for p in reversed(created):
        try:
            p.rmdir()   # only succeeds on an empty folder
        except OSError:
            return


def remove_run_files(cfg, proj: Path) -> list[str]:
    """--overwrite: delete exactly the files a run writes (never the base or the data)."""
    files = run_files(proj)
    for p in files:
        for what, given in (("--load_model", cfg.load_model), ("--data_file", cfg.data_file)):
            if given and same_file(p, given):
                raise UserError(f"{what} {given} has the name of a run file in --proj_dir "
                                f"(--overwrite would delete it); move it out of {proj} first")
    for p in files:
        remove_path(p)
    return [p.name for p in files]


def check_merge_output(cfg) -> None:
    """--merge_output never replaces a file without --overwrite, and never the run's own
    inputs or outputs, whatever the flags."""
    out = cfg.merge_output
    if not out:
        return
    path = Path(out)
    if path.is_dir():
        raise UserError(f"--merge_output {path} is a folder; give a file name such as {path}/merged.pth")
    if same_file(cfg.load_model, path):
        raise UserError(f"--merge_output {out} is the base model; choose another path")
    for data in _data_files(cfg):
        if same_file(data, path):
            raise UserError(f"--merge_output {out} is the training data; choose another path")
    proj = Path(cfg.proj_dir)
    if path.parent.resolve() == proj.resolve() and _RUN_FILE.fullmatch(path.name):
        raise UserError(f"--merge_output {out} is a file this run writes in --proj_dir; "
                        f"choose another name (e.g. {proj}/merged.pth)")
    if path.exists() and _is_adapter(path):
        raise UserError(f"--merge_output {out} is an adapter file (adapter_config.json is "
                        f"beside it); choose another path")
    if path.exists() and not cfg.overwrite:
        how = "move it away first" if cfg.resume else "pass --overwrite to replace it"
        raise UserError(f"--merge_output {out} already exists; choose another path or {how}")


def check_state_merge(peft, cfg, version: str) -> None:
    """--peft state --merge_output on an RWKV-7 base is refused before training (a baked
    RWKV-7 state would be ignored by runtimes: the method's check_merged says why)."""
    from ..adapters import registry
    check = registry.get(peft.method).check_merged
    if check is not None and cfg.merge_output:
        check(version)


def _data_files(cfg) -> list[Path]:
    p = Path(cfg.data_file) if cfg.data_file else None
    if p is None:
        return []
    stem = p.with_suffix("") if p.suffix in (".bin", ".idx") else p
    return [p, Path(f"{stem}.bin"), Path(f"{stem}.idx")]


def _is_adapter(path: Path) -> bool:
    return bool(re.fullmatch(r"rwkv-\d+\.(pth|safetensors)", path.name)) and \
        (path.parent / "adapter_config.json").exists()


# ---------------------------------------------------------------- --resume
def read_resume_checkpoint(path: Path) -> dict:
    """last.ckpt as data (a DeepSpeed folder read into the same layout); UserError when it
    cannot be read."""
    try:
        if Path(path).is_dir():
            from .ds import read_checkpoint_folder
            ckpt = read_checkpoint_folder(Path(path))
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file cannot be resumed from
        raise UserError(f"--resume: {path} cannot be read ({quote(e)}); it is damaged or "
                        f"not ours: restore it, or start a new run with --overwrite") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"--resume: {path} is not a training checkpoint; restore it, or start a "
                        f"new run with --overwrite")
    return ckpt


def check_resume_tensors(path: Path, model, trainable: list[str]) -> None:
    """Before anything is written: last.ckpt must hold exactly this config's trainable tensors
    with their shapes (another r with train_config.json lost would fail deep in Lightning)."""
    saved = read_resume_checkpoint(path).get("state_dict", {})
    params = dict(model.named_parameters())
    want = {f"model.{n}": tuple(params[n].shape) for n in trainable}
    have = {k: tuple(t.shape) for k, t in saved.items() if hasattr(t, "shape")}
    if set(have) != set(want):
        missing, extra = sorted(set(want) - set(have))[:3], sorted(set(have) - set(want))[:3]
        raise UserError(f"--resume: the saved run's trainable tensors do not match this config "
                        f"(missing {missing}, unexpected {extra}); resume with the same "
                        f"--peft/--peft_config/--train_parts")
    for k in sorted(want):
        if have[k] != want[k]:
            raise UserError(f"--resume: the saved run's {k.removeprefix('model.')} has shape "
                            f"{have[k]} but this config makes {want[k]}; resume with the "
                            f"--peft_config the run was started with")


def check_resume_config(cfg, proj: Path, keys) -> None:
    """The settings in `keys` must match the run's train_config.json (peft_config compared as
    parsed configs, not strings)."""
    saved_path = proj / "train_config.json"
    if not saved_path.exists():
        return
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--resume: {saved_path} is damaged ({quote(e)}); restore it (rwkvft "
                        f"wrote it at the start of the run) or start a new run with --overwrite") from None
    if not isinstance(saved, dict):
        raise UserError(f"--resume: {saved_path} does not hold a configuration; restore it or "
                        f"start a new run with --overwrite")
    saved = typed_train_config(saved, f"--resume: {saved_path}", keys)  # a field's type is checked
    now = json.loads(cfg.to_json())
    for k in keys:
        if k in saved and not _same_setting(k, saved, now):
            raise UserError(f"--resume: --{k} is {now[k]!r} but the run in {proj} used "
                            f"{saved[k]!r}; use the same value to continue it")


def _same_setting(key: str, saved: dict, now: dict) -> bool:
    if key != "peft_config":
        return saved[key] == now[key]
    from ..adapters import parse_peft
    try:
        return parse_peft(saved.get("peft", now["peft"]), saved[key]).to_dict() == \
            parse_peft(now["peft"], now[key]).to_dict()
    except UserError:
        return saved[key] == now[key]


# ---------------------------------------------------------------- the base model
def check_checkpoint_sizes(cfg) -> None:
    """The size flags (--n_layer, --n_embd, ...) against the checkpoint, as load_base checks
    them; plan_run asks early when other flags are wrong too, so that one run lists all."""
    from ..formats import read_state_dict
    from ..models.schema import check_against, infer_config
    check_against(infer_config(read_state_dict(cfg.load_model)), n_layer=cfg.n_layer,
                  n_embd=cfg.n_embd, vocab_size=cfg.vocab_size, head_size=cfg.head_size_a,
                  version=cfg.my_testing)


def check_finite_base(sd: dict, path) -> None:
    """NaN/Inf in the base is a damaged file, not a learning-rate problem: say so at load."""
    for k, t in sd.items():
        if t.is_floating_point() and not _finite(t):
            raise UserError(f"the base model {path} has NaN or Inf values in {k}; the file is "
                            f"damaged: re-download or re-export it")


def _finite(t: torch.Tensor, chunk: int = 1 << 24) -> bool:
    flat = t.reshape(-1)
    return all(bool(torch.isfinite(flat[i:i + chunk]).all()) for i in range(0, flat.numel(), chunk))


def save_error_text(e: BaseException) -> str:
    """A failed save in our words: torch.save reports a full disk as a RuntimeError
    ('[enforce fail at inline_container.cc:...] . unexpected pos 64 vs 0')."""
    if isinstance(e, OSError):
        return e.strerror or quote(e)
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", str(e).strip().splitlines()[0]
                  if str(e).strip() else type(e).__name__)
    return f"the write failed, is the disk full? ({text})"

