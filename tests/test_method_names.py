"""Outside a method's own module (adapters/<method>.py), no source line compares a method's
name: everything else asks the method record (rwkvft.adapters.method). Readers of foreign
files that recognise another tool's spelling are listed with the reason."""
from __future__ import annotations

import ast
from pathlib import Path

from rwkvft.adapters import registry

SRC = Path(__file__).resolve().parents[1] / "src" / "rwkvft"
METHOD_MODULES = {"adapters/miss.py", "adapters/lora.py", "adapters/pissa.py", "adapters/state.py",
                  "adapters/full.py"}
# file -> why its comparisons are not about our method names
FOREIGN = {"config/validate.py": "RWKV-PEFT's --train_type values (state, fullstate) are translated to --peft"}


def _names() -> set[str]:
    return {n for m in registry.methods() for n in (m.name, *m.aliases)}


def _strings(node) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _strings(e)]
    return []


def comparisons(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, text) of every comparison of a method name ("none" only next to `method`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            continue
        text = ast.get_source_segment(source, node) or ""
        hit = {s for side in (node.left, *node.comparators) for s in _strings(side)} & names
        if hit - {"none"} or ("none" in hit and "method" in text):
            found.append((node.lineno, text))
    return found


def test_no_method_name_comparisons_outside_method_modules():
    names = _names()
    offending = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in METHOD_MODULES or rel in FOREIGN:
            continue
        offending += [f"{rel}:{line} {text}" for line, text in comparisons(path.read_text(), names)]
    assert offending == []


def test_the_scan_finds_comparisons():
    names = {"miss", "lora", "none"}
    src = ('if config.get("method") == "miss": pass\n'
           'x = method in ("lora", "pissa")\n'
           'y = quant == "none"\n'
           'z = cfg.method != "none"\n')
    assert [line for line, _ in comparisons(src, names)] == [1, 2, 4]
