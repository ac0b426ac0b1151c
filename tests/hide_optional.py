"""pytest plugin (`-p hide_optional`, tests/ on PYTHONPATH) that makes the optional packages the
GPU device machine lacks look uninstalled (importlib finds nothing, as where they are absent),
so tests/test_gpu_collection.py can check that `pytest -m gpu` collects there."""
from __future__ import annotations

import importlib.machinery

# optional packages not in the device image (docs/gpu.md "Running the GPU check"; it has peft,
# pyarrow, hypothesis, transformers and triton). pyrwkv-tokenizer is missing there too, but it
# is a core dependency: gpu_check.sh installs it from the carried wheels.
HIDDEN = {"rwkv7_hf", "fla", "bitsandbytes", "deepspeed", "rwkv", "pydantic", "hjson", "lm_eval", "trl",
          "datasets"}
_find_spec = importlib.machinery.PathFinder.find_spec.__func__


def _hiding_find_spec(cls, name, path=None, target=None):
    if name.split(".")[0] in HIDDEN:
        return None
    return _find_spec(cls, name, path, target)


importlib.machinery.PathFinder.find_spec = classmethod(_hiding_find_spec)
