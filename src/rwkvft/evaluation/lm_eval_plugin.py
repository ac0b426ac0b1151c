"""Makes the plain `lm_eval --model rwkvft ...` find our model: imported at interpreter start by
the `rwkvft-lm-eval.pth` file the package installs (setup.py writes it), it waits for lm-eval's
model registry to be imported and then registers "rwkvft" there as a lazy placeholder.

Why a startup hook: lm-eval up to 0.4.13 looks `--model NAME` up only in its own registry, which
holds its hard-coded MODEL_MAPPING and whatever was imported before; it reads no entry point group
and has no flag that imports a plugin (docs/internals.md, "lm_eval --model rwkvft"). Newer lm-eval
reads the `lm_eval.models` entry point pyproject.toml also declares; both name the same target, and
lm-eval skips an alias that is already registered, so the two never disagree.

This module runs in EVERY Python process of the environment, so it imports nothing but `sys`, does
nothing until lm-eval's registry is imported, and never raises: neither torch nor lm-eval nor the
rest of rwkvft is loaded by it (tests/evaluation/test_lm_eval_console.py checks).
"""
import sys

MODEL_NAME = "rwkvft"
TARGET = "rwkvft.evaluation.harness:RwkvLM"     # pyproject.toml's lm_eval.models entry point
REGISTRY = "lm_eval.api.registry"


def register(registry_module) -> None:
    """"rwkvft" -> TARGET in lm-eval's model registry, importing nothing of ours (the harness, and
    torch with it, load when lm-eval asks for the model). lm-eval's own models are registered
    first: its get_model() fills the registry from lm_eval.models only when it is empty."""
    import lm_eval.models  # noqa: F401  (lm-eval's MODEL_MAPPING, as get_model would)
    registry = registry_module.model_registry
    if MODEL_NAME not in registry:
        registry.register(MODEL_NAME, target=TARGET)


class _RegisterAfterExec:
    """Loader wrapper: runs the registry module, hands the module its real loader back, then
    register(); any other attribute asked of it meanwhile is the real loader's."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self._loader   # the module keeps the real one
        uninstall()
        try:
            register(module)
        except Exception as e:  # an lm-eval we do not know must still run its own models
            import warnings
            warnings.warn(f"rwkvft could not register its lm-eval model ({type(e).__name__}: {e}); "
                          f"use `python -m rwkvft.evaluation` instead of `lm_eval`", stacklevel=2)


class _WatchRegistry:
    """A meta path finder that answers for lm-eval's registry only: it finds the real spec through
    the other finders and wraps its loader; it leaves sys.meta_path once the registry has run."""

    def find_spec(self, name, path=None, target=None):
        if name != REGISTRY:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _WatchRegistry):
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisterAfterExec(spec.loader)
                return spec
        return None

    def invalidate_caches(self):
        pass


_watcher = _WatchRegistry()


def install() -> None:
    """Called once per interpreter (the .pth line); registers at once if lm-eval's registry is
    somehow already imported."""
    if REGISTRY in sys.modules:
        try:
            register(sys.modules[REGISTRY])
        except Exception:
            pass
    elif not any(isinstance(f, _WatchRegistry) for f in sys.meta_path):
        sys.meta_path.insert(0, _watcher)


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _WatchRegistry)]


install()
