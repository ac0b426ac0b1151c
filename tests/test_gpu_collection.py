"""The GPU check (benchmarks/gpu_check.sh, `pytest -m gpu`) must collect every test module on
the device machine, which lacks most optional packages: a module-level import of one stops
collection and then no GPU test runs at all. Optional imports therefore use
pytest.importorskip, and the test extra is asserted installed here, so that CI still fails
(instead of skipping) where it is missing."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent


def test_the_test_extra_is_installed():
    tomllib = pytest.importorskip("tomllib")   # Python >= 3.11
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    modules = [re.split(r"[<>=!~\[ ]", req)[0].replace("-", "_") for req in extra]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    assert not missing, f"pip install -e '.[test]': missing {missing}"


def test_gpu_tests_collect_without_the_optional_packages():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu",
                           "-p", "hide_optional", "-p", "no:cacheprovider", str(TESTS)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "error" not in out.lower(), out[-4000:]
    assert "tests/kernels/test_gpu.py::test_wkv7_gpu_ops_match_the_reference" in out, out[-4000:]
