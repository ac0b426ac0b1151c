"""`--compile`: torch.compile (inductor) of each block, the same code on CPU and GPU.

Regional compilation: every block's forward is compiled on its own (`nn.Module.compile`), so
the 12-48 blocks of a model share one compiled graph (per distinct input signature: layer 0,
which starts the value residual from a frozen embedding, gets its own) instead of one huge
whole-model graph, and whatever wraps the blocks (activation checkpointing, infctx chunks, DDP's
and DeepSpeed's gradient hooks, the chunked head + cross-entropy) stays eager around them.

What stays eager inside a block (`opaque`, a dynamo graph break, nothing else):
  * the WKV op: the CPU op's loop over chunks would unroll into a graph as long as the sequence,
    and the CUDA / fla kernels are opaque to dynamo anyway;
  * the quantized base's dequantize + matmul (bitsandbytes' C calls in a custom autograd Function).
Everything else (token-shift mixes, low-rank decay/gate paths, group norm, gates, adapters, the
FFN) is traced, and inductor fuses the elementwise chains between the matmuls.

Nothing here runs unless asked for: a model that is never compiled calls the plain modules.
"""
from __future__ import annotations

import shutil

import torch

# Blocks share one code object (Block.forward), and dynamo counts recompiles per code object:
# layer 0 vs the rest, training vs no_grad validation, the reference policy of preference
# tuning (adapters switched off) and a second sequence length each add an entry. The default of
# 8 would quietly run the rest eagerly; this leaves room and still stops a runaway.
RECOMPILE_LIMIT = 64

# torch.compile's inductor backend builds C++ (CPU) or Triton (GPU) kernels
BACKEND = "inductor"


def opaque(fn, what: str):
    """`fn` unchanged when eager; under torch.compile a graph break: run as it is, never traced.
    (Built only when compiling: `torch.compiler.disable` imports dynamo, seconds at start-up.)"""
    return torch.compiler.disable(fn, reason=f"{what} stays opaque to --compile")


def cannot_compile(device_type: str, strategy: str = "") -> str:
    """Why --compile cannot run here ('' when it can): one line for the run log."""
    if strategy.startswith("deepspeed_stage_3"):
        return ("ZeRO-3 releases parameters between uses, which compiled graphs do not expect "
                "(pytorch #140091, #141646)")
    if device_type == "cpu" and not _cpp_compiler():
        return "inductor needs a C++ compiler on CPU (g++ or clang++) and none was found"
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "inductor needs triton on a GPU (pip install triton)"
    return ""


def _cpp_compiler() -> bool:
    from torch._inductor import config
    names = config.cpp.cxx if isinstance(config.cpp.cxx, (tuple, list)) else (config.cpp.cxx,)
    return any(n and shutil.which(n) for n in names) or bool(shutil.which("g++") or shutil.which("clang++"))


def compile_blocks(model, device_type: str, strategy: str = "", backend: str | None = None) -> str:
    """Compile every block of `model` in place (lazily: the work happens on the first call).
    Returns one line for the log: what was compiled and what stays eager, or why nothing was.
    `backend` is for tests ("aot_eager": dynamo and autograd's graphs without code generation)."""
    backend = backend or BACKEND
    why = cannot_compile(device_type, strategy) if backend == "inductor" else ""
    if why:
        return f"--compile is off for this run: {why}; running eagerly"
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch._dynamo.config.accumulated_recompile_limit = max(
        torch._dynamo.config.accumulated_recompile_limit, RECOMPILE_LIMIT * 4)
    # layer_id (an int attribute) would otherwise be specialised: one graph per layer
    torch._dynamo.config.allow_unspec_int_on_nn_module = True
    # A compiled piece returns views of its intermediates (r.view(heads) etc., into the opaque
    # WKV op), whose view metadata torch 2.13's AOTAutograd cache pickles and unpickles unsafely:
    # saving an entry segfaults now and then, and an entry loaded in a later run replays garbage
    # sizes (RuntimeError "shape '[94154201532889, ...]' is invalid"). Without that cache the
    # forward/backward split is traced again in each process (seconds); inductor's own cache of
    # generated C++ still spares a warm run the compiler.
    from torch._functorch import config as functorch_config
    functorch_config.enable_autograd_cache = False
    for block in model.blocks:
        block.att.wkv = opaque(type(block.att).wkv, "the WKV op")
        block.compile(backend=backend)
    return (f"--compile: {len(model.blocks)} blocks compiled with {backend} on the first step; "
            f"the WKV op ({model.op}) and quantized base matmuls run eagerly between the compiled pieces")


def is_compiled(model) -> bool:
    return any(getattr(b, "_compiled_call_impl", None) is not None for b in model.blocks)


def compile_seconds() -> float:
    """Seconds this process has spent compiling so far (dynamo + inductor, forward and backward
    graphs); 0.0 when torch does not say."""
    try:
        from torch._dynamo.utils import calculate_time_spent
        return float(calculate_time_spent().get("total_wall_time", 0.0))
    except Exception:  # a private helper: its absence must not stop a run
        return 0.0
