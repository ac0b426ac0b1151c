"""`rwkvft bench`: steady-state training throughput, peak memory and MFU of a fine-tuning setup.

It runs the trainer's own recipe steps without Lightning: the model from rwkvft.models,
`training.model_prep.prepare_model` (inject, frozen-weight cast, --quant), the step's loss
`training.loss.batch_loss` (one pass, or infctx chunks), and AdamW on the trainable parameters.
Warm-up steps (kernel builds, Triton autotune, allocator growth) are run first and not timed.

MFU = model FLOPs per token x tokens/s / the matmul rate measured in the same process
(GPU: a bf16 8192^3 matmul; CPU: an fp32 matmul of a size that runs quickly), so it says how
close the step gets to what this machine's matmuls deliver, not to a datasheet peak.
Model FLOPs per token (the convention of the GPU issue; every count is numel of matrices):
    4 x matmul params (forward + input gradient; all matrices except the embedding, a gather)
  + 2 x trainable matmul params (their weight gradients)
  + 2 x block matmul params with grad_cp (the recomputed block forward)
  + 2 x block matmul params with --train_type infctx (each chunk's forward is recomputed)
WKV is not counted, nor the head forward the chunked loss recomputes for a trainable head
(training/loss.py; a frozen head's loss gradient is made in the forward, with no recompute).
"""
from __future__ import annotations

import json
import math
import resource
import time
from dataclasses import asdict, dataclass

import torch

from .adapters import parse_peft
from .config import QUANT_MODES
from .errors import UserError
from .models.schema import LAYER0_UNUSED

# name -> (n_layer, n_embd): the released RWKV-7 sizes, plus a CPU-sized one
SIZES = {"tiny": (2, 128), "0.1b": (12, 768), "0.4b": (24, 1024), "1.5b": (24, 2048),
         "2.9b": (32, 2560), "7b": (32, 4096)}
PRECISIONS = ("fp32", "tf32", "bf16")
# parameters never used as a matrix in a matmul (gathers and elementwise per-head vectors)
_NOT_MATMUL = ("emb.weight", ".r_k", ".time_faaaa", ".time_first", ".time_state")


@dataclass
class BenchConfig:
    size: str = "tiny"
    model: str = ""                # a checkpoint instead of random weights of `size`
    version: str = "x070"          # random weights of this version (x060: RWKV-6 shapes)
    vocab_size: int = 65536
    ctx_len: int = 1024
    micro_bsz: int = 1
    steps: int = 5
    warmup: int = 2
    accelerator: str = "auto"      # auto|cpu|gpu
    op: str = "auto"
    precision: str = ""            # "" = bf16 on GPU, fp32 on CPU
    quant: str = "none"
    grad_cp: int = 0
    compile: int = 0               # 1 = torch.compile each block (models/compile.py)
    train_type: str = "none"       # none | infctx (chunks of chunk_ctx tokens carrying the state)
    chunk_ctx: int = 512
    infctx_bptt: str = "full"
    peft: str = "miss"
    peft_config: str = "{}"
    head_chunk: int = 2048
    lr: float = 1e-4
    seed: int = 0
    lengths: str = ""              # padded-batch workload (data/lengths.py); "" = every sample ctx_len
    batching: str = "dynamic"      # with lengths: ctx | dynamic | grouped (how batches are padded)


def check(cfg: BenchConfig) -> None:
    if cfg.version not in ("x070", "x060", "x052"):
        raise UserError(f"--version {cfg.version!r}: random weights come as x070, x060 or x052")
    if not cfg.model and cfg.size not in SIZES:
        raise UserError(f"unknown --size {cfg.size!r}; choose one of {', '.join(SIZES)} or pass --model PATH")
    for name in ("ctx_len", "micro_bsz", "steps", "vocab_size", "head_chunk"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.warmup < 0:
        raise UserError(f"--warmup must not be negative, got {cfg.warmup}")
    if cfg.precision and cfg.precision not in PRECISIONS:
        raise UserError(f"--precision {cfg.precision!r}: bench runs {', '.join(PRECISIONS)}")
    if cfg.quant not in QUANT_MODES:
        raise UserError(f"--quant {cfg.quant!r} is not one of {', '.join(QUANT_MODES)}")
    for name in ("grad_cp", "compile"):
        if getattr(cfg, name) not in (0, 1):
            raise UserError(f"--{name} must be 0 or 1, got {getattr(cfg, name)}")
    if cfg.compile and cfg.warmup < 1:
        raise UserError("--compile 1 needs --warmup 1 or more: the first step compiles, and is not timed")
    from .data.lengths import BATCHINGS
    if cfg.batching not in BATCHINGS:
        raise UserError(f"--batching {cfg.batching!r} is not one of {', '.join(BATCHINGS)}")
    from .config import validate_infctx
    validate_infctx(cfg)


# ----------------------------------------------------------------------------- model
def random_model(n_layer: int, n_embd: int, vocab_size: int, device, seed: int = 0):
    """An fp32 RWKV-7 of the released shape (models.init.new_config) with random weights of
    realistic magnitude, generated directly on `device`: the CPU generator behind
    models.init.random_state_dict needs about a minute at 2.9B, longer than the steps timed."""
    from .models import build_model
    from .models.init import new_config

    cfg = new_config(n_layer, n_embd, vocab_size)
    with torch.device("meta"):
        model = build_model(cfg)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            _fill(name, p, gen)
    return model.float()


def _fill(name: str, p: torch.Tensor, gen) -> None:
    local = name.rpartition(".")[2]
    noise = torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)
    if name == "emb.weight":
        p.copy_(noise)
    elif p.dim() == 2 and local == "weight":                     # Linear (out, in)
        p.copy_(noise / math.sqrt(p.shape[1]))
    elif local in ("w1", "a1", "v1", "g1", "w2", "a2", "v2", "g2"):
        p.copy_(noise / math.sqrt(p.shape[0]))                   # used as x @ w
    elif local.startswith("x_"):
        p.copy_(torch.rand(p.shape, generator=gen, device=p.device, dtype=p.dtype))   # lerps
    elif local == "weight":                                      # LayerNorm / GroupNorm gains
        p.fill_(1.0)
    elif local == "bias":
        p.zero_()
    else:                                                        # w0, a0, v0, k_k, k_a, r_k
        p.copy_(noise)


def _load(cfg: BenchConfig, device):
    if cfg.model:
        from .formats import load_model
        return load_model(cfg.model, device=device, dtype=torch.float32)
    n_layer, n_embd = SIZES[cfg.size]
    if cfg.version != "x070":  # the test models' generator (slower; RWKV-7 has the fast one)
        from .models.build import model_from_state_dict
        from .models.init import new_config, random_state_dict
        sd = random_state_dict(new_config(n_layer, n_embd, cfg.vocab_size, version=cfg.version), cfg.seed)
        return model_from_state_dict(sd, device=device, dtype=torch.float32)
    return random_model(n_layer, n_embd, cfg.vocab_size, device, cfg.seed)


# ----------------------------------------------------------------------------- FLOPs
def _is_matmul(name: str, t: torch.Tensor) -> bool:
    # (1, 1, C) token-shift / decay vectors are elementwise: a matrix has two real dims
    return sum(d > 1 for d in t.shape) >= 2 and not any(name == s or name.endswith(s) for s in _NOT_MATMUL)


def matmul_param_counts(model) -> dict:
    """numel of the matrices the model multiplies by: total, trainable, inside blocks.

    A quantized base weight (a buffer) counts with its float shape; layer 0's att.v0/v1/v2,
    present in some files, are never used and do not count.
    """
    total = trainable = blocks = 0
    for n, p in model.named_parameters():
        if _is_matmul(n, p) and not LAYER0_UNUSED.search(n):
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
            blocks += p.numel() if n.startswith("blocks.") else 0
    for n, numel in _quantized_weights(model).items():
        total += numel
        blocks += numel if n.startswith("blocks.") else 0
    return {"total": total, "trainable": trainable, "blocks": blocks}


def _quantized_weights(model) -> dict:
    """{name: numel} of base weights stored quantized (buffers, not parameters)."""
    from .adapters.quant import QuantizedBase
    return {f"{n}.weight": math.prod(m.weight_shape) for n, m in model.named_modules()
            if isinstance(m, QuantizedBase)}


def flops_per_token(counts: dict, grad_cp: bool, infctx: bool = False) -> int:
    recomputes = int(grad_cp) + int(infctx)
    return 4 * counts["total"] + 2 * counts["trainable"] + 2 * counts["blocks"] * recomputes


# ----------------------------------------------------------------------------- timing
def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device, rounds: int = 5, reps: int = 10) -> tuple[float, str]:
    """Measured matmul FLOP/s here: bf16 8192^3 on a GPU, fp32 512^3 on CPU, the best of `rounds`
    rounds of `reps` products. Best, not mean: on a shared machine a stall only ever slows a
    round down, and one stall inside a single timed stretch put the CPU rate at half of what
    the step's own matmuls got (MFU 107%)."""
    n, dt = (8192, torch.bfloat16) if device.type == "cuda" else (512, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(rounds):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, 2.0 * n ** 3 * reps / (time.perf_counter() - t0))
    return best, f"{str(dt).removeprefix('torch.')} {n}^3"


def _plan(cfg: BenchConfig) -> list:
    """[(sample lengths, padded length)] per step: full ctx_len samples, or the --lengths workload."""
    import numpy as np
    if not cfg.lengths:
        return [(np.full(cfg.micro_bsz, cfg.ctx_len), cfg.ctx_len)]
    from .data.lengths import plan_batches, sample_lengths
    lengths = sample_lengths(cfg.lengths, cfg.ctx_len, cfg.micro_bsz, cfg.seed)
    return plan_batches(lengths, cfg.micro_bsz, cfg.batching, cfg.ctx_len, cfg.seed)


def _batch(lengths, T: int, vocab: int, device, gen):
    """Random tokens; each row real for its length, then padding (token 0, mask 0)."""
    idx = torch.randint(0, vocab, (len(lengths), T + 1), generator=gen)
    mask = torch.zeros(len(lengths), T)
    for i, n in enumerate(lengths):
        mask[i, :int(n)] = 1
    idx[:, 1:][mask == 0] = 0
    return idx[:, :-1].to(device), idx[:, 1:].to(device), mask.to(device)


@dataclass
class BenchSetup:
    """A model set up as `rwkvft train` sets it up, and `step(k)`: one optimizer step on the
    k-th batch of the plan (benchmarks/profile_step.py profiles the same step)."""
    cfg: BenchConfig
    device: torch.device
    precision: str
    model: torch.nn.Module
    trainable: list
    opt: torch.optim.Optimizer
    plan: list
    op: str
    op_note: str
    compile_note: str
    gen: torch.Generator

    def batch(self, k: int):
        return _batch(*self.plan[k % len(self.plan)], self.model.config.vocab_size, self.device, self.gen)

    def step(self, k: int, batch=None) -> torch.Tensor:
        from .training.infctx import batch_loss, chunk_len
        cfg = self.cfg
        inputs, targets, mask = self.batch(k) if batch is None else batch
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            loss = batch_loss(self.model, inputs, targets, mask, chunk=cfg.head_chunk,
                              chunk_ctx=chunk_len(cfg), bptt=cfg.infctx_bptt)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


def setup(cfg: BenchConfig) -> BenchSetup:
    """Check `cfg`, build the model and optimizer as the trainer would; nothing timed yet."""
    from .hardware import resolve_device
    from .kernels import resolve_op
    from .models.compile import compile_blocks
    from .training.model_prep import prepare_model
    from .training.execution import check_op_name

    check(cfg)
    hw = resolve_device(cfg.accelerator, cfg.precision, precisions=PRECISIONS)
    device, precision = hw.device, hw.precision
    acfg = parse_peft(cfg.peft, cfg.peft_config)
    check_op_name(cfg.op, "gpu" if device.type == "cuda" else "cpu")
    torch.manual_seed(cfg.seed)
    model = _load(cfg, device).train()
    op, note = resolve_op(cfg.op, device.type == "cuda", model.config.version)
    model.set_runtime(op=op, grad_cp=bool(cfg.grad_cp))
    trainable, _ = prepare_model(model, acfg, [], hw.lightning_precision, cfg.quant, device)
    compile_note = compile_blocks(model, device.type) if cfg.compile else ""
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW([params[n] for n in trainable], lr=cfg.lr,
                            **({"fused": True} if device.type == "cuda" else {}))
    return BenchSetup(cfg, device, precision, model, trainable, opt, _plan(cfg), op, note,
                      compile_note, torch.Generator().manual_seed(cfg.seed))


def run_bench(cfg: BenchConfig) -> dict:
    """Set up as `rwkvft train` would, time `steps` optimizer steps after `warmup`; one dict."""
    from .models.compile import compile_seconds
    from .training.infctx import chunk_len

    s = setup(cfg)
    device, model, plan = s.device, s.model, s.plan
    counts = matmul_param_counts(model)
    timed = [plan[(cfg.warmup + i) % len(plan)] for i in range(cfg.steps)]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    compiling = compile_seconds()
    losses = [s.step(k) for k in range(cfg.warmup)]
    compiling = compile_seconds() - compiling   # the warm-up steps compile (--compile)
    _sync(device)
    t0 = time.perf_counter()
    losses += [s.step(cfg.warmup + k) for k in range(cfg.steps)]
    _sync(device)
    elapsed = time.perf_counter() - t0
    # real tokens only: padding positions are computed but train nothing
    real = sum(int(lens.sum()) for lens, _ in timed)
    positions = sum(len(lens) * T for lens, T in timed)
    tokens_per_s = real / elapsed
    rate, rate_what = matmul_rate(device)
    fpt = flops_per_token(counts, bool(cfg.grad_cp), chunk_len(cfg) > 0)
    params = dict(model.named_parameters())
    mcfg = model.config
    out = asdict(cfg)
    out.update({
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "op": s.op, "op_note": s.op_note, "precision": s.precision,
        "version": mcfg.version, "n_layer": mcfg.n_layer, "n_embd": mcfg.n_embd,
        "vocab_size": mcfg.vocab_size,
        "params": sum(p.numel() for p in model.parameters()) + sum(_quantized_weights(model).values()),
        "trainable_params": sum(params[n].numel() for n in s.trainable),
        "matmul_params": counts["total"], "trainable_matmul_params": counts["trainable"],
        "block_matmul_params": counts["blocks"], "flops_per_token": fpt,
        "step_time_s": elapsed / cfg.steps, "tokens_per_s": tokens_per_s,
        "positions_per_s": positions / elapsed, "padding_fraction": 1 - real / positions,
        "matmul_flops_per_s": rate, "matmul_measured": rate_what,
        "mfu": fpt * tokens_per_s / rate,
        "loss_first": float(losses[0]), "loss_last": float(losses[-1]),
        "compile_s": compiling, "compile_note": s.compile_note,
    })
    out.update(_peak_memory(device))
    return out


def _peak_memory(device) -> dict:
    if device.type == "cuda":
        return {"peak_mem_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                "peak_mem_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30}
    # ru_maxrss is KiB on Linux: the whole process's peak, model set-up included
    return {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def format_result(r: dict) -> str:
    """Human summary, a few lines."""
    mem = (f"peak memory {r['peak_mem_allocated_gib']:.2f} GiB allocated, "
           f"{r['peak_mem_reserved_gib']:.2f} GiB reserved" if "peak_mem_allocated_gib" in r
           else f"peak RSS {r['peak_rss_gib']:.2f} GiB (whole process)")
    return "\n".join([
        f"{r['size'] if not r['model'] else r['model']}: L{r['n_layer']} C{r['n_embd']} on {r['device']}, "
        f"op={r['op']} precision={r['precision']} quant={r['quant']} grad_cp={r['grad_cp']} compile={r['compile']} "
        f"micro_bsz={r['micro_bsz']} ctx_len={r['ctx_len']} peft={r['peft']} {r['peft_config']}"
        + (f" infctx chunk_ctx={r['chunk_ctx']} bptt={r['infctx_bptt']}" if r["train_type"] == "infctx" else ""),
        f"  {r['tokens_per_s']:,.0f} tokens/s ({r['step_time_s'] * 1e3:.1f} ms/step over {r['steps']} steps "
        f"after {r['warmup']} warm-up)" + (f"; real tokens, with --lengths {r['lengths']} --batching "
                                           f"{r['batching']}: padding {100 * r['padding_fraction']:.1f}%, "
                                           f"{r['positions_per_s']:,.0f} positions/s" if r["lengths"] else ""),
        f"  {mem}",
        *([f"  {r['compile_note']}; {r['compile_s']:.1f} s compiling in the warm-up"] if r["compile"] else []),
        f"  MFU {100 * r['mfu']:.1f}% = {r['flops_per_token'] / 1e9:.3f} GFLOP/token x tokens/s / "
        f"{r['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s measured ({r['matmul_measured']})",
        f"  loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}" + (f"\n  {r['op_note']}" if r["op_note"] else ""),
    ])


def to_json(r: dict) -> str:
    return json.dumps(r, sort_keys=True)
