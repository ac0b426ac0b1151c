"""Package layering and import circles, at module level and inside function bodies.

Layers, highest first (an import may only go to the same layer or a lower one, and two units
of one layer may not import each other):
    cli > training, bench, config, evaluation, demo, the rwkvft API (__init__) >
    assembly, generation, new_model > formats > adapters, data > models > kernels >
    utils, errors, foreign_json, jsonfields, hardware
The import graph between modules (function-level imports included) has no circle.
"""
from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rwkvft"

LAYERS = {"__main__": 8, "cli": 7,
          "training": 6, "bench": 6, "config": 6, "__init__": 6, "evaluation": 6, "demo": 6,
          "assembly": 5, "generation": 5, "new_model": 5, "formats": 4, "adapters": 3, "data": 3,
          "models": 2, "kernels": 1,
          "utils": 0, "errors": 0, "foreign_json": 0, "jsonfields": 0, "hardware": 0}


def _module_name(path: Path) -> str:
    parts = ("rwkvft",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:]) if "." in module else Path()
    return (SRC / rel).with_suffix(".py").exists() or (SRC / rel / "__init__.py").exists()


def imported_modules(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """rwkvft modules an import node inside `module` refers to (a name imported from a package
    that is itself a module counts as that module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("rwkvft")]
    package = module if is_package else module.rpartition(".")[0]
    if node.level:
        base = package.split(".")
        base = ".".join(base[:len(base) - node.level + 1])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    if not target.startswith("rwkvft"):
        return []
    out = []
    for a in node.names:
        sub = f"{target}.{a.name}"
        out.append(sub if _exists(sub) else target)
    return out


def _edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported_modules(node, module, path.name == "__init__.py"):
                    if target != module:
                        edges.setdefault((module, target), []).append(
                            f"{path.relative_to(SRC)}:{node.lineno}")
    return edges


def unit(module: str) -> str:
    """rwkvft.formats.pth -> formats; rwkvft.config -> config; rwkvft -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


EDGES = _edges()
UNITS = sorted({unit(m) for pair in EDGES for m in pair} | {unit(_module_name(p)) for p in SRC.rglob("*.py")})


# Crossings tolerated for now, each with its reason (none: the last two moved when h25c landed --
# the objective names are declared with the flags, the TaskScorer is a save hook rwkvft.train hands
# the recipe). A NEW crossing must be fixed, not listed.
KNOWN: dict = {}


def test_every_unit_has_a_layer():
    assert [u for u in UNITS if u not in LAYERS] == []


@pytest.mark.parametrize("pair", [p for p in itertools.permutations(UNITS, 2)], ids="->".join)
def test_package_pair(pair):
    """Imports from unit a to unit b (any level) only go down, or sideways one way."""
    a, b = pair
    where = [w for (s, t), ws in EDGES.items() if unit(s) == a and unit(t) == b for w in ws]
    if not where or (a, b) in KNOWN or (b, a) in KNOWN:
        return
    assert LAYERS[a] >= LAYERS[b], f"{a} (layer {LAYERS[a]}) imports {b} (layer {LAYERS[b]}): {where[:3]}"
    back = [w for (s, t), ws in EDGES.items() if unit(s) == b and unit(t) == a for w in ws]
    assert not back, f"{a} and {b} import each other: {where[:2]} / {back[:2]}"


def find_cycle(edges) -> list[str]:
    """One import circle of the module graph, [] if there is none (iterative DFS)."""
    graph: dict[str, list[str]] = {}
    for s, t in edges:
        graph.setdefault(s, []).append(t)
    state: dict[str, int] = {}
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph.get(root, ()))))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return []


def _is_package_init_edge(s: str, t: str) -> bool:
    # a package's __init__ importing its own submodules, and a submodule importing a sibling
    # through the package (`from . import registry`) are one package, not a circle of modules
    return t.startswith(s + ".")


def test_no_import_circle_between_modules():
    edges = [e for e in EDGES if not _is_package_init_edge(*e) and (unit(e[0]), unit(e[1])) not in KNOWN]
    assert find_cycle(edges) == []


def test_the_scans_see_function_level_imports_and_circles():
    # the scanners must find what they look for (or the tests above could never fail)
    tree = ast.parse("def f():\n    from ..formats.reading import read_model\n")
    node = tree.body[0].body[0]
    assert imported_modules(node, "rwkvft.models.build", False) == ["rwkvft.formats.reading"]
    assert imported_modules(ast.parse("from . import registry").body[0], "rwkvft.formats", True) == \
        ["rwkvft.formats.registry"]
    assert find_cycle([("a", "b"), ("b", "c"), ("c", "a")]) == ["a", "b", "c", "a"]
    assert find_cycle([("a", "b"), ("a", "c"), ("b", "c")]) == []
    assert ("rwkvft.adapters.merge", "rwkvft.adapters.registry") in EDGES
