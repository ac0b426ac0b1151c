"""Package layering: `rwkvft.checkpoint` (file I/O) needs only the schema from `rwkvft.models`,
and no function body in models/ or checkpoint/ imports the other package (a hidden cycle)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rwkvft"


def test_importing_checkpoint_pulls_only_the_model_schema():
    code = ("import json, sys; import rwkvft.checkpoint, rwkvft.checkpoint.merge, "
            "rwkvft.checkpoint.adapter_io; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('rwkvft.models'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["rwkvft.models", "rwkvft.models.schema"]


def _imported_packages(node: ast.AST, package: str) -> set[str]:
    """Top-level rwkvft subpackages an import node inside rwkvft.<package> refers to."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif node.level == 0:
        names = [node.module or ""]
    elif node.level == 1:
        names = [f"rwkvft.{package}"]
    else:  # from ..x import y
        names = [f"rwkvft.{node.module}" if node.module else f"rwkvft.{a.name}" for a in node.names]
    return {n.split(".")[1] for n in names if n.startswith("rwkvft.") and n.count(".") >= 1}


def _function_level_imports(package: str) -> list[str]:
    found = []
    for path in sorted((SRC / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found += [f"{path.name}:{node.lineno} {fn.name} -> {p}"
                              for p in _imported_packages(node, package)]
    return found


def test_no_function_level_imports_between_models_and_checkpoint():
    offending = [f for f in _function_level_imports("models") if f.endswith("-> checkpoint")]
    offending += [f for f in _function_level_imports("checkpoint") if f.endswith("-> models")]
    assert offending == []


def test_the_scan_sees_function_level_imports(tmp_path):
    # the scanner itself must find what it looks for (or the test above could never fail)
    tree = ast.parse("def f():\n    from ..checkpoint.rwkv_format import read_state_dict\n")
    node = tree.body[0].body[0]
    assert _imported_packages(node, "models") == {"checkpoint"}
    assert _imported_packages(ast.parse("import rwkvft.models.build").body[0], "checkpoint") == {"models"}
