"""Everything about the package is in pyproject.toml; this file only adds the one thing setuptools
cannot declare there: `rwkvft-lm-eval.pth` at the top of site-packages, whose line registers our
lm-eval model lazily so the plain `lm_eval --model rwkvft` finds it (rwkvft/evaluation/
lm_eval_plugin.py says why a startup hook). A wheel gets it through build_lib like any module; an
editable install (`pip install -e .`) builds its wheel without copying build_lib, so there the file
goes straight into that wheel's root (setuptools' `install_lib` for the editable wheel).
The name sorts after `__editable__.*.pth`, which puts src/ on sys.path first."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "rwkvft-lm-eval.pth"
# site.py runs a .pth line that starts with "import" as code, and prints a traceback on EVERY
# interpreter start when it raises: an editable install whose source tree moved or was deleted
# would make each `python` of the environment print one. The hook is optional, so it is tried.
PTH_LINE = 'import sys; exec("try: import rwkvft.evaluation.lm_eval_plugin\\nexcept ImportError: pass")\n'


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        roots = [self.build_lib]
        if self.editable_mode:
            roots.append(self.get_finalized_command("install").install_lib)
        for root in roots:
            os.makedirs(root, exist_ok=True)
            with open(os.path.join(root, PTH_NAME), "w", encoding="utf-8") as f:
                f.write(PTH_LINE)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH_NAME)]


setup(cmdclass={"build_py": build_py_with_pth})
