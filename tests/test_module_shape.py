"""Module shape: no source module over 400 lines, and training/run.py holds the recipe only
(its parts live in execution, loggers, run_dir, saver and teardown)."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rwkvft"
RECIPE = {"TrainResult", "Plan", "TrainerParts", "plan_run", "load_base", "adapter_init",
          "build_data", "build_trainer", "make_validator", "fit", "finish", "train"}


def test_no_module_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}


def _top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def test_training_run_defines_only_the_recipe_steps():
    assert _top_level_names(SRC / "training" / "run.py") == RECIPE


def test_the_scan_sees_a_helper_added_to_run(tmp_path):
    p = tmp_path / "run.py"
    p.write_text("def train():\n    pass\n\ndef _loggers():\n    pass\nX = 1\n", encoding="utf-8")
    assert _top_level_names(p) == {"train", "_loggers", "X"}
