"""The plain `lm_eval --model rwkvft` console script finds our model once the package is
installed: a wheel and an editable install of this tree go into throwaway virtual environments
(which see this machine's torch and lm-eval), and the real `lm_eval` script runs there."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")  # the eval extra; in [test], so CI has it (tests/test_gpu_collection.py)

from eval_helpers import demo, tasks_dir  # noqa: F401  (fixtures)
from rwkvft.cli import main
from rwkvft.evaluation import lm_eval_plugin

ROOT = Path(__file__).resolve().parents[2]
PTH = "rwkvft-lm-eval.pth"


def _copy_project(dest: Path) -> Path:
    """What a build reads (pyproject, setup.py, README, src), so building writes nothing here."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def _venv(path: Path, *pip_args: str) -> Path:
    """A venv that also sees this interpreter's site-packages (torch, lm-eval, setuptools; as
    path entries, so their .pth files, e.g. a development install of rwkvft, do not run there),
    with rwkvft installed by `pip install ARGS` (offline: no index, no build isolation).
    Not --system-site-packages: run from a venv, that would be the base interpreter's."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True, env=_env()).stdout.strip()
    ours = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    (Path(site) / "_outer_site.pth").write_text("".join(p + "\n" for p in ours))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    "--no-index", "--no-build-isolation", *pip_args], check=True, env=_env())
    return python


def _console_script(name: str) -> Path:
    """The console script pip wrote for lm-eval (from its install record: wherever it lives)."""
    from importlib.metadata import distribution
    found = [f.locate() for f in distribution("lm_eval").files or [] if f.name == name]
    assert found, f"lm-eval's {name} console script is not in its install record"
    return Path(found[0]).resolve()


def _env() -> dict:
    """No PYTHONPATH: the venv's installed rwkvft is the one imported, and only site-packages'
    .pth files can register the model."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return _copy_project(tmp_path_factory.mktemp("project") / "rwkvft")


@pytest.fixture(scope="module")
def wheel_python(project, tmp_path_factory):
    return _venv(tmp_path_factory.mktemp("venv") / "wheel", str(project))


@pytest.fixture(scope="module")
def editable_python(project, tmp_path_factory):
    return _venv(tmp_path_factory.mktemp("venv") / "editable", "--editable", str(project))


PROBE = """import json, sys
before = {m: m in sys.modules for m in ("torch", "lm_eval", "rwkvft.evaluation.harness")}
from lm_eval.api.registry import model_registry
names = dict(model_registry.items())
print(json.dumps({"before": before, "plugin": "rwkvft.evaluation.lm_eval_plugin" in sys.modules,
                  "rwkvft": names.get("rwkvft"), "hf": "hf" in names, "torch": "torch" in sys.modules,
                  "file": sys.modules["rwkvft"].__file__}))"""


@pytest.mark.parametrize("install", ["wheel_python", "editable_python"])
def test_installed_package_registers_the_model_lazily(install, request):
    """Both installs: interpreter start loads only the small hook (no torch, no lm-eval); importing
    lm-eval's registry then holds "rwkvft" as a lazy placeholder for our harness (still no torch)
    beside lm-eval's own models. The console-script test below loads it for real."""
    python = request.getfixturevalue(install)
    out = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, env=_env(),
                         cwd=python.parent)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["before"] == {"torch": False, "lm_eval": False, "rwkvft.evaluation.harness": False}
    assert got["plugin"] and got["rwkvft"] == lm_eval_plugin.TARGET and got["hf"] and not got["torch"]
    assert not Path(got["file"]).is_relative_to(ROOT), "the test must import the installed copy"


def test_lm_eval_console_script_scores_like_rwkvft_eval(wheel_python, demo, tasks_dir, tmp_path, capsys):
    """The real `lm_eval` script (pip's console-script file of lm-eval, run by the venv's python)
    scores base + adapter on a local task exactly as `rwkvft eval --tasks` does."""
    script = _console_script("lm_eval")
    base, adapter = demo
    run = subprocess.run([str(wheel_python), str(script), "run", "--model", "rwkvft",
                          "--model_args", f"pretrained={base},adapter={adapter}", "--tasks", "h28_mc",
                          "--include_path", str(tasks_dir), "--device", "cpu",
                          "--output_path", str(tmp_path / "out")],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    written = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]["h28_mc"]
    assert main(["eval", "--model", str(base), "--adapter", str(adapter), "--tasks", "h28_mc",
                 "--include_path", str(tasks_dir), "--json"]) == 0
    ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]["adapted"]["h28_mc"]["acc"]
    assert written["acc,none"] == ours["value"] and written["acc_stderr,none"] == ours["stderr"]


@pytest.fixture(scope="module")
def hook_lines(project, tmp_path_factory):
    """rwkvft-lm-eval.pth's text in the wheel and in the editable wheel, by build hook."""
    lines = {}
    for hook in ("build_wheel", "build_editable"):
        out = tmp_path_factory.mktemp(hook)
        build = subprocess.run([sys.executable, "-c", f"import setuptools.build_meta as b; "
                                f"print(b.{hook}({str(out)!r}))"],
                               capture_output=True, text=True, cwd=project, env=_env(), check=True)
        with zipfile.ZipFile(out / build.stdout.strip().splitlines()[-1]) as whl:
            lines[hook] = whl.read(PTH).decode()
    return lines


def _run_pth(line: str, site_dir: Path, pythonpath: str = "") -> subprocess.CompletedProcess:
    """A bare interpreter (-S: no site-packages, so no installed rwkvft) that processes one .pth
    file holding `line`, as site.py does at start-up, and prints which rwkvft modules it loaded."""
    (site_dir / PTH).write_text(line)
    env = {**_env(), **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    code = ("import site, sys; site.addsitedir(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith('rwkvft')))")
    return subprocess.run([sys.executable, "-S", "-c", code, str(site_dir)], capture_output=True,
                          text=True, env=env, cwd=site_dir, check=True)


def test_wheel_and_editable_wheel_carry_the_same_hook(hook_lines, tmp_path):
    """`pip install .` and `pip install -e .` both put rwkvft-lm-eval.pth at the top of
    site-packages, and its one line imports the hook module (and nothing else of ours)."""
    assert len(set(hook_lines.values())) == 1
    line = hook_lines["build_wheel"]
    assert line.startswith("import ") and line.count("\n") == 1
    ran = _run_pth(line, tmp_path, pythonpath=str(ROOT / "src"))
    assert ran.stderr == ""
    assert ran.stdout.strip() == str(["rwkvft", "rwkvft.evaluation", lm_eval_plugin.__name__])


def test_the_hook_is_silent_where_rwkvft_cannot_be_imported(hook_lines, tmp_path):
    """An editable install whose source tree moved or was deleted leaves the .pth behind: site.py
    runs its line in every Python process of the environment, which must start without a
    traceback (it printed "Error processing line 1 of rwkvft-lm-eval.pth ... No module named
    'rwkvft'" at every start before)."""
    ran = _run_pth(hook_lines["build_editable"], tmp_path)
    assert ran.stderr == "" and ran.stdout.strip() == "[]"


def test_fallback_module_registers_before_lm_eval_cli(monkeypatch):
    """`python -m rwkvft.evaluation ARGS` (for an environment whose .pth files do not run, e.g.
    `python -S` or a source tree on PYTHONPATH): lm-eval's CLI starts with "rwkvft" registered."""
    import lm_eval.__main__ as lm_main
    from lm_eval.api.registry import get_model

    from rwkvft.evaluation import __main__ as fallback
    seen = []
    monkeypatch.setattr(lm_main, "cli_evaluate", lambda: seen.append(get_model("rwkvft")))
    fallback.main()
    from rwkvft.evaluation.harness import RwkvLM
    assert seen == [RwkvLM]


def test_pyproject_declares_the_lm_eval_plugin_and_the_extra():
    """The entry point newer lm-eval reads names the same class as the startup hook."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["entry-points"]["lm_eval.models"] == {lm_eval_plugin.MODEL_NAME: lm_eval_plugin.TARGET}
    extras = meta["optional-dependencies"]
    assert any(d.startswith("lm-eval") for d in extras["eval"]) and extras["lm_eval"] == extras["eval"]
    assert any(d.startswith("lm-eval") for d in extras["test"])
