"""Where a training step's time goes: torch.profiler over the trainer's own step, by op class.

The step is `rwkvft bench`'s (bench.setup: the model as `rwkvft train` prepares it, the method
injected, `batch_loss`, backward, AdamW). Scopes are put around the pieces by this script only
(module hooks and wrappers installed here; the model has none), then every profiled op's self
time goes to one class (CLASSES, `classify`: the one place that maps ops to classes):
  forward:   frozen-weight matmul, adapter maths, WKV, low-rank mixes (the w/a/v/g matmuls),
             block elementwise, head + CE, other (embedding, ln_out, loss glue)
  backward:  "bwd: <class of the forward op>", found through autograd's sequence numbers
  step:      optimizer (AdamW step + zero_grad), data (batch creation)
With --compile 1 the blocks are compiled graphs: their ops show as one class (compiled
blocks) and its backward; WKV, head + CE, optimizer and data keep their own.

For each class: its share of the profiled time and the MFU the step would have if the class cost
nothing (MFU / (1 - share)); the MFU comes from timed steps without the profiler (bench's FLOP
count over the matmul rate measured in the same process). The profiler adds a few us per op,
which inflates the classes made of many small ops (elementwise) a little.

    python benchmarks/profile_step.py [--version x070|x060] [--peft miss --peft_config '{"r":64}']
        [--size 0.1b] [--ctx_len 256] [--steps 2] [--profile_steps 1] [--compile 0|1]
        [--accelerator cpu|gpu] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import defaultdict

import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from rwkvft import bench
from rwkvft.models.compile import opaque

SCOPE = "rwkvft/"
# scope -> class: the one map from what ran to what it is
CLASSES = {
    "frozen": "frozen-weight matmul",
    "adapter": "adapter maths",
    "wkv": "WKV",
    "head": "head + CE",
    "optimizer": "optimizer",
    "data": "data",
    "compiled": "compiled blocks",
}
MIXES, ELEMENTWISE, OTHER = "low-rank mixes (w/a/v/g)", "block elementwise", "other"
MATMUL_OPS = {"aten::mm", "aten::bmm", "aten::matmul", "aten::addmm", "aten::linear", "aten::einsum",
              "aten::baddbmm"}
BACKWARD = "autograd::engine::evaluate_function"
COMPILED = ("CompiledFunction", "Torch-Compiled Region")
NO_GRAPH = (CLASSES["data"], CLASSES["optimizer"], OTHER)


def classify(ev, seq_class: dict) -> str:
    """The class of a profiled op: the innermost scope above it, refined inside a block by the
    op's kind; in the backward, "bwd: " + the class of the forward op that made the autograd node."""
    path, e = [], ev
    while e is not None:
        if e.name.startswith(SCOPE):
            kind = e.name[len(SCOPE):]
            if kind == "block":
                top = path[-1] if path else ev
                return MIXES if top.name in MATMUL_OPS else ELEMENTWISE
            return CLASSES[kind]
        if e.name.startswith(COMPILED) and "Backward" not in e.name:
            return CLASSES["compiled"]   # (CompiledFunctionBackward is a backward node)
        if e.name.startswith(BACKWARD):
            return "bwd: " + seq_class.get(e.sequence_nr, OTHER)
        path.append(e)
        e = e.cpu_parent
    return OTHER


def breakdown(events, device: bool = False) -> dict:
    """{class: seconds} over the profiled events: each op's self CPU time, or on a GPU the
    self time of the kernels it launched (device=True)."""
    seq_class = {}
    for ev in events:   # forward ops: what each autograd node's forward was
        if ev.sequence_nr >= 0 and not _in_backward(ev):
            cls = classify(ev, {})
            # ops that make no autograd node still show the counter's current value
            if cls not in NO_GRAPH:
                seq_class.setdefault(ev.sequence_nr, cls)
    out = defaultdict(float)
    for ev in events:
        t = ev.self_device_time_total if device else ev.self_cpu_time_total
        out[classify(ev, seq_class)] += t / 1e6
    return dict(out)


def _in_backward(ev) -> bool:
    e = ev
    while e is not None:
        if e.name.startswith(SCOPE) or (e.name.startswith(COMPILED) and "Backward" not in e.name):
            return False   # a forward scope (also a recomputed forward inside the backward)
        if e.name.startswith(BACKWARD):
            return True
        e = e.cpu_parent
    return False


# ----------------------------------------------------------------------------- scopes
def _scoped(fn, name: str):
    def wrapper(*args, **kwargs):
        with record_function(SCOPE + name):
            return fn(*args, **kwargs)
    return wrapper


def _hook_scope(module, name: str) -> None:
    stack = []

    def enter(_m, _args):
        stack.append(record_function(SCOPE + name))
        stack[-1].__enter__()

    def leave(_m, _args, _out):
        stack.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


def install_scopes(setup, inside_blocks: bool) -> None:
    """Scopes around WKV (each att module's `wkv`, opaque as --compile makes it) and the chunked
    head + CE (a module global this script replaces), and, for an eager model, around each
    block, adapted Linear, and frozen matmul inside it."""
    import rwkvft.training.loss as loss
    for block in setup.model.blocks:
        wkv = _scoped(type(block.att).wkv, "wkv")
        block.att.wkv = opaque(wkv, "the WKV op") if setup.cfg.compile else wkv
    if not getattr(loss._chunk_loss, "scoped", False):
        loss._chunk_loss = _scoped(loss._chunk_loss, "head")
        loss._chunk_loss.scoped = True
    if inside_blocks:
        _install_block_scopes(setup)


def _install_block_scopes(setup) -> None:
    from rwkvft.adapters.base import AdaptedLinear
    for block in setup.model.blocks:
        _hook_scope(block, "block")
        for mod in block.modules():
            if isinstance(mod, AdaptedLinear):
                _hook_scope(mod, "adapter")
                mod.base_forward = _scoped(mod.base_forward, "frozen")
            elif isinstance(mod, torch.nn.Linear):
                _hook_scope(mod, "frozen")


def scoped_step(setup, k: int):
    with record_function(SCOPE + "data"):
        batch = setup.batch(k)
    opt_step, setup.opt.step = setup.opt.step, _scoped(setup.opt.step, "optimizer")
    try:
        return setup.step(k, batch)
    finally:
        setup.opt.step = opt_step


# ----------------------------------------------------------------------------- run
def run(args) -> dict:
    gpu = args.accelerator == "gpu"
    cfg = bench.BenchConfig(size=args.size, version=args.version, ctx_len=args.ctx_len,
                            micro_bsz=args.micro_bsz, accelerator=args.accelerator,
                            op="auto" if gpu else "chunked",
                            peft=args.peft, peft_config=args.peft_config, compile=args.compile,
                            warmup=args.warmup, steps=args.steps, seed=args.seed)
    s = bench.setup(cfg)
    install_scopes(s, inside_blocks=False)      # before the first (compiling) step
    for k in range(cfg.warmup):
        s.step(k)
    bench._sync(s.device)
    t0 = time.perf_counter()
    for k in range(cfg.steps):
        s.step(cfg.warmup + k)
    bench._sync(s.device)
    step_s = (time.perf_counter() - t0) / cfg.steps
    if not cfg.compile:
        _install_block_scopes(s)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for k in range(args.profile_steps):
            scoped_step(s, cfg.warmup + cfg.steps + k)
        bench._sync(s.device)
        prof_s = (time.perf_counter() - t0) / args.profile_steps
    classes = breakdown(prof.events(), device=gpu)
    rate, _ = bench.matmul_rate(s.device)
    fpt = bench.flops_per_token(bench.matmul_param_counts(s.model), False)
    tokens = cfg.micro_bsz * cfg.ctx_len
    mfu = fpt * tokens / step_s / rate
    total = sum(classes.values())
    return {"device": torch.cuda.get_device_name() if gpu else "cpu", "precision": s.precision,
            "op": s.op, "version": args.version, "peft": args.peft, "peft_config": args.peft_config,
            "compile": args.compile, "size": args.size, "ctx_len": args.ctx_len,
            "micro_bsz": args.micro_bsz, "step_s": step_s, "profiled_step_s": prof_s,
            "tokens_per_s": tokens / step_s, "mfu": mfu, "matmul_flops_per_s": rate,
            "flops_per_token": fpt, "load_average": os.getloadavg()[0], "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "classes": _rows(classes, total, mfu, args.profile_steps),
            "with_backward": _rows(with_backward(classes), total, mfu, args.profile_steps)}


def with_backward(classes: dict) -> dict:
    """Each forward class with its backward added ("WKV" = WKV + "bwd: WKV")."""
    out = defaultdict(float)
    for c, t in classes.items():
        out[c.removeprefix("bwd: ")] += t
    return dict(out)


def _rows(classes: dict, total: float, mfu: float, steps: int) -> dict:
    return {c: {"s": t / steps, "share": t / total, "mfu_without": mfu / max(1e-9, 1 - t / total)}
            for c, t in sorted(classes.items(), key=lambda kv: -kv[1])}


def table(r: dict) -> str:
    head = (f"{r['version']} {r['size']} {r['device']} {r['precision']} op={r['op']} {r['peft']} {r['peft_config']} ctx {r['ctx_len']} "
            f"mb {r['micro_bsz']} compile={r['compile']}: {r['step_s']:.2f} s/step "
            f"({r['tokens_per_s']:.0f} tokens/s, MFU {100 * r['mfu']:.1f}%; profiled step "
            f"{r['profiled_step_s']:.2f} s; load {r['load_average']:.1f}, {r['threads']} threads)")
    rows = []
    for key, title in (("classes", "class"), ("with_backward", "class, forward + backward")):
        rows += ["", f"| {title} | s/step | share | MFU if it cost nothing |", "|---|---|---|---|"]
        rows += [f"| {c} | {v['s']:.3f} | {100 * v['share']:.1f}% | {100 * v['mfu_without']:.1f}% |"
                 for c, v in r[key].items()]
    return "\n".join([head, *rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="x070", choices=("x070", "x060"))
    ap.add_argument("--size", default="0.1b")
    ap.add_argument("--peft", default="miss")
    ap.add_argument("--peft_config", default='{"r":64}')
    ap.add_argument("--ctx_len", type=int, default=256)
    ap.add_argument("--micro_bsz", type=int, default=1)
    ap.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu"),
                    help="gpu: kernel time per class (CUDA activity), the GPU's WKV op, bf16")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2, help="timed steps (no profiler)")
    ap.add_argument("--profile_steps", type=int, default=1)
    ap.add_argument("--compile", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = run(args)
    print(json.dumps(r) if args.json else table(r), flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
