"""Precomputed reference log-probs for DPO: `rwkvft prepare --ref_logps` and `train --ref_logps`.

The file (safetensors, next to the data by default: `pairs.jsonl.ref_logps.safetensors`) holds,
for every usable pair of the data file in read order (data/preference.py `read_pairs`):
  chosen_logps, rejected_logps   float64 (N,): the SUM of the base model's log-probs over the
                                 answer's tokens (EOD included). The trainer compares exactly these
                                 sums (DPO's rewards are β x summed log-ratios; ipo divides by the
                                 token counts itself), never means: OpenMOSE stored sums in one
                                 path and means in another (spec preference_tuning.md §3)
  chosen_tokens, rejected_tokens int64 (N,): the answer lengths, so means can be derived
and, in its metadata, what they were computed from: the base's fingerprint (adapters/fingerprint.py,
as adapter files carry), the data file's name, size and sha256, the rendering flags (ctx_len,
chat template, role names, train_on_think) and a digest of every pair's token ids.

`train --ref_logps FILE` (explicit: a stale file is never picked up silently) checks all of that
before the model is loaded and then skips the reference forward: the reference is the BASE model
the file was computed with. Refused: another base, another data file, other rendering flags, an
objective without a reference, --adapter_init (the run would not start from the base), --val_file
(its pairs are not in the file; --val_split's are).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import UserError

FORMAT, VERSION = "rwkvft-ref-logps", 1
RENDER_KEYS = ("ctx_len", "chat_template", "user_role", "assistant_role", "system_role", "train_on_think")
TENSORS = ("chosen_logps", "rejected_logps", "chosen_tokens", "rejected_tokens")


def default_path(data_file: str) -> Path:
    p = Path(data_file)
    return p.with_name(p.name + ".ref_logps.safetensors")


def file_identity(path) -> dict:
    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"name": p.name, "size": p.stat().st_size, "sha256": h.hexdigest()}


def render_options(cfg) -> dict:
    return {k: (bool(getattr(cfg, k)) if k == "train_on_think" else getattr(cfg, k)) for k in RENDER_KEYS}


def pairs_digest(pairs) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.prompt, p.chosen, p.rejected]).encode())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------- computing and writing
def reference_sums(model, pairs, batch_size: int, device, head_chunk: int = 2048, forward_context=None,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) float64 sums of `model`'s answer log-probs, through the same
    shared-prompt forward as training's reference (training/pair_logps.py)."""
    import contextlib

    from tqdm import tqdm

    from ..data.preference import collate_pairs
    from .pair_logps import shared_prompt_logps
    from .preference_step import _to
    ctx = forward_context or contextlib.nullcontext
    model.eval()
    chosen, rejected = [], []
    with torch.no_grad(), tqdm(total=len(pairs), unit="pair", disable=not progress, desc="ref_logps") as bar:
        for s in range(0, len(pairs), batch_size):
            with ctx():
                lp = shared_prompt_logps(model, _to(collate_pairs(pairs[s:s + batch_size]), device), head_chunk)
            chosen.append(lp.chosen.detach().double().cpu())
            rejected.append(lp.rejected.detach().double().cpu())
            bar.update(len(pairs[s:s + batch_size]))
    return torch.cat(chosen), torch.cat(rejected)


def write(path, pairs, chosen: torch.Tensor, rejected: torch.Tensor, meta: dict) -> None:
    """The file, atomically (a crash leaves no half-written file, and the old one intact)."""
    from safetensors.torch import save_file

    from ..utils import atomic_path
    tensors = {"chosen_logps": chosen.double().contiguous(), "rejected_logps": rejected.double().contiguous(),
               "chosen_tokens": torch.tensor([len(p.chosen) for p in pairs], dtype=torch.int64),
               "rejected_tokens": torch.tensor([len(p.rejected) for p in pairs], dtype=torch.int64)}
    info = {"format": FORMAT, "version": VERSION, "pairs": len(pairs), "pairs_digest": pairs_digest(pairs),
            "reduction": "sum over answer tokens (EOD included); the trainer compares these sums; "
                         "mean = sum / tokens", **meta}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"rwkvft": json.dumps(info, sort_keys=True)})


# ---------------------------------------------------------------- reading and checking
def read(path) -> tuple[dict, dict]:
    """(metadata, tensors) of a reference log-prob file; UserError when it is not one."""
    from safetensors import SafetensorError, safe_open
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--ref_logps {p} not found; write it with: rwkvft prepare --ref_logps "
                        f"--input DATA --load_model BASE")
    try:
        with safe_open(str(p), framework="pt") as f:
            info = json.loads((f.metadata() or {}).get("rwkvft", "{}"))
            tensors = {k: f.get_tensor(k) for k in TENSORS if k in f.keys()}
    except (SafetensorError, ValueError, OSError) as e:
        raise UserError(f"--ref_logps {p} is not a reference log-prob file ({e}); write one with "
                        f"rwkvft prepare --ref_logps") from None
    if info.get("format") != FORMAT or set(tensors) != set(TENSORS):
        raise UserError(f"--ref_logps {p} is not a reference log-prob file; write one with rwkvft prepare --ref_logps")
    if info.get("version") != VERSION:
        raise UserError(f"--ref_logps {p} has format version {info.get('version')}, this rwkvft reads "
                        f"{VERSION}; write it again with rwkvft prepare --ref_logps")
    return info, tensors


def check_flags(cfg) -> None:
    """The combinations --ref_logps cannot serve (before anything is read)."""
    if cfg.objective != "dpo":
        raise UserError(f"--ref_logps holds a reference model's log-probs, which --objective "
                        f"{cfg.objective} does not use; drop --ref_logps (or use --objective dpo)")
    if cfg.adapter_init:
        raise UserError("--ref_logps holds the base model's log-probs, but --adapter_init starts the "
                        "policy from an adapter (its reference would be that adapter); drop one of them")
    if cfg.val_file:
        raise UserError("--ref_logps covers the pairs of --data_file only, not --val_file's; hold out "
                        "pairs with --val_split instead")


def _again(path) -> str:
    return f"; write it again for this run: rwkvft prepare --ref_logps --input DATA --load_model BASE " \
           f"(with this run's flags), or drop --ref_logps {path}"


def check_file(info: dict, cfg, path) -> None:
    """Another data file or other rendering flags (the base is checked by check_base)."""
    now = file_identity(cfg.data_file)
    was = info.get("data", {})
    if (was.get("size"), was.get("sha256")) != (now["size"], now["sha256"]):
        raise UserError(f"--ref_logps {path} was computed for another data file ({was.get('name')}, "
                        f"{was.get('size')} bytes), not --data_file {cfg.data_file} ({now['size']} bytes)"
                        + _again(path))
    opts, here = info.get("render", {}), render_options(cfg)
    for k in RENDER_KEYS:
        if opts.get(k) != here[k]:
            raise UserError(f"--ref_logps {path} was computed with --{k} {opts.get(k)!r}, this run has "
                            f"--{k} {here[k]!r}" + _again(path))


def check_base(info: dict, base_path: str, path) -> None:
    from ..adapters.fingerprint import fingerprint
    from ..formats import read_state_dict
    now, was = fingerprint(read_state_dict(base_path)), info.get("base", {})
    for k in ("version", "n_layer", "n_embd", "vocab_size", "checksum"):
        if was.get(k) != now[k]:
            raise UserError(f"--ref_logps {path} holds the log-probs of another base model ({k} "
                            f"{was.get(k)!r} there, {now[k]!r} for --load_model {base_path})" + _again(path))


def attach(cfg, pairs: list) -> list:
    """`pairs` carrying the file's reference sums, after every check (module docstring)."""
    import dataclasses
    path = cfg.ref_logps
    info, t = read(path)
    check_file(info, cfg, path)
    check_base(info, cfg.load_model, path)
    lengths = [(len(p.chosen), len(p.rejected)) for p in pairs]
    stored = list(zip(t["chosen_tokens"].tolist(), t["rejected_tokens"].tolist()))
    if info.get("pairs") != len(pairs) or info.get("pairs_digest") != pairs_digest(pairs) or stored != lengths:
        raise UserError(f"--ref_logps {path}: the pairs of --data_file {cfg.data_file} differ from the "
                        f"{info.get('pairs')} it was computed on" + _again(path))
    refs = zip(t["chosen_logps"].tolist(), t["rejected_logps"].tolist())
    return [dataclasses.replace(p, ref=(c, r)) for p, (c, r) in zip(pairs, refs)]


# ---------------------------------------------------------------- `rwkvft prepare --ref_logps`
def prepare(data_file: str, base: str, cfg, output: str = "", batch_size: int = 4, device: str = "cpu",
            op: str = "auto", precision: str = "fp32", force: bool = False, progress: bool = True) -> str:
    """Compute and write the file for `data_file` read with `cfg`'s rendering flags (anything with
    RENDER_KEYS and max_bad_fraction); returns a summary. Every check before the model is loaded."""
    import time

    from ..data.preference import pair_roles, read_pairs
    from ..kernels import resolve_op
    from ..utils import require_file, same_file
    out = Path(output) if output else default_path(data_file)
    require_file(Path(data_file), "--input")
    if same_file(Path(data_file), out) or same_file(Path(base), out):
        raise UserError(f"--output {out} is one of the inputs; choose another path")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to overwrite it or choose another --output")
    dev = _device(device)
    if precision not in ("fp32", "bf16"):
        raise UserError(f"--precision {precision!r} is not fp32 or bf16")
    pairs, stats = read_pairs(data_file, cfg.ctx_len, pair_roles(cfg), cfg.max_bad_fraction, what="--input")
    identity = file_identity(data_file)
    from ..adapters.fingerprint import fingerprint
    from ..formats import read_state_dict
    from ..models import model_from_state_dict
    sd = read_state_dict(base)
    base_fp = fingerprint(sd)
    top = max(max(p.prompt + p.chosen + p.rejected) for p in pairs)
    if top >= base_fp["vocab_size"]:
        raise UserError(f"token id {top} of {data_file} is outside the vocabulary of {base} "
                        f"(0..{base_fp['vocab_size'] - 1}); pairs are tokenized with the World tokenizer")
    model = model_from_state_dict(sd, dtype=torch.float32).to(dev)
    model.set_runtime(op=resolve_op(op, dev.type == "cuda", base_fp["version"] or "x070")[0])
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if precision == "bf16" else None
    t0 = time.perf_counter()
    chosen, rejected = reference_sums(model, pairs, batch_size, dev, forward_context=ctx, progress=progress)
    write(out, pairs, chosen, rejected, {"base": base_fp, "base_file": Path(base).name, "data": identity,
                                         "render": render_options(cfg), "precision": precision})
    return (f"preference data: {stats.summary()}\n"
            f"reference log-probs of {len(pairs)} pairs in {time.perf_counter() - t0:.1f} s "
            f"(sums over answer tokens; base {Path(base).name}, {precision})\n"
            f"wrote {out}\ntrain with: --objective dpo --ref_logps {out} (and the same --ctx_len, "
            f"--chat_template and role flags)")


def _device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA GPU is visible; use --device cpu")
    return dev
