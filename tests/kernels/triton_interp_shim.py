"""Work-arounds that let fla-core 0.6's RWKV kernels run under triton 3.6's interpreter
(TRITON_INTERPRET=1) on CPU; shared/specs/gpu_on_cpu.md §1.1 lists the failures they answer.
Test plumbing only: `install()` before importing fla, `patch_fla()` after importing its ops."""
from __future__ import annotations

import builtins
import sys

import triton  # TRITON_INTERPRET is read here: the caller's environment must already have it
import triton.language as tl


def install() -> None:
    """Patches to triton itself; call before fla is imported."""
    import triton.runtime.autotuner as at
    import triton.runtime.interpreter as ti

    # (1) the autotuner benchmarks every config through the GPU driver: keep one config and
    # give it a dummy timing (the configs differ only in warps/stages, not in the maths)
    prune = at.Autotuner.prune_configs
    at.Autotuner.prune_configs = lambda self, kwargs: prune(self, kwargs)[:1]
    at.Autotuner.do_bench = property(lambda self: lambda fn, quantiles=None, **kw: [0.0, 0.0, 0.0])

    # (2) tensor.__index__ is int(data) on a shape-(1,) array, which numpy >= 2.4 rejects
    # (fixed in triton 3.8): take the single element explicitly
    patch_lang_tensor = ti._patch_lang_tensor

    def _patch_lang_tensor(tensor, scope):
        patch_lang_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    ti._patch_lang_tensor = _patch_lang_tensor


class _LoopIndex(int):
    """Compiled Triton yields tensors from `range`, so kernels call `.to(tl.int64)` on the loop
    index; the interpreter yields Python ints. An int with a no-op .to() bridges that."""

    def to(self, *args, **kwargs):
        return self


def _range(*args):
    return (_LoopIndex(i) for i in builtins.range(*args))


@triton.jit
def _gather(src, index, axis: tl.constexpr):
    # (3) fla binds `gather = tl.gather` at import; the interpreter only patches builtins
    # reached as attributes of triton.language, so call it through a jitted wrapper
    return tl.gather(src, index, axis)


def patch_fla() -> None:
    """Patches to fla's modules; call after importing the fla ops under test."""
    for name, module in list(sys.modules.items()):
        if name == "fla" or name.startswith("fla."):
            if getattr(module, "gather", None) is tl.gather:
                module.gather = _gather
            module.range = _range   # (4) see _LoopIndex
