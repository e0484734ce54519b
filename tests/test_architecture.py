"""The layering rules of ``docs/architecture.md``, checked on the source (static, no imports run).

- only ``emmafuse/cli/`` imports argparse, and only it and the ``python -m`` entry points import it;
- no module imports the package ``emmafuse`` itself (its ``__init__`` only re-exports);
- the graph of imports between emmafuse modules (lazy ones inside functions included) has no cycle;
- one suffix list and one pairing function, in ``emmafuse.image_io``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "emmafuse"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_module(name: str) -> bool:
    return name in MODULES


def _imports(path: Path) -> Iterator[tuple[ast.AST, str]]:
    """Every imported name as a module path (``from a.b import c`` gives ``a.b.c`` or ``a.b``)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield node, full if _is_module(full) else node.module


def _edges(name: str) -> set[str]:
    """The emmafuse modules ``name`` imports, with the packages that importing them runs."""
    out: set[str] = set()
    for _, target in _imports(MODULES[name]):
        if not target.startswith("emmafuse.") or target == name:
            continue
        parts = target.split(".")
        for k in range(2, len(parts) + 1):  # emmafuse.a, emmafuse.a.b, ...: each __init__ runs
            prefix = ".".join(parts[:k])
            own_package = name == prefix or name.startswith(prefix + ".")
            if _is_module(prefix) and not own_package:
                out.add(prefix)
    return out


def test_only_the_cli_imports_argparse() -> None:
    offenders = [
        name
        for name, path in MODULES.items()
        if not name.startswith("emmafuse.cli") and any(t.split(".")[0] == "argparse" for _, t in _imports(path))
    ]
    assert offenders == []


def test_the_library_never_imports_the_cli() -> None:
    """Only the CLI itself and the ``python -m`` entry points (``__main__``) import ``emmafuse.cli``."""
    offenders = [
        name
        for name in MODULES
        if not name.startswith("emmafuse.cli")
        and not name.endswith("__main__")
        and any(t == "emmafuse.cli" or t.startswith("emmafuse.cli.") for t in _edges(name))
    ]
    assert offenders == []


def test_no_module_imports_the_package_back() -> None:
    offenders = []
    for name, path in MODULES.items():
        if name == "emmafuse":
            continue
        for node, target in _imports(path):
            bare = isinstance(node, ast.Import) and target == "emmafuse"
            from_package = isinstance(node, ast.ImportFrom) and node.module == "emmafuse"
            if bare or from_package:
                offenders.append(f"{name}: {ast.unparse(node)}")
    assert offenders == []


def test_no_import_cycles() -> None:
    graph = {name: _edges(name) for name in MODULES}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_one_suffix_list() -> None:
    def suffix_lists(path: Path) -> list[int]:
        lines = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                values = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if {".png", ".jpg"} <= values:
                    lines.append(node.lineno)
        return lines

    found = {name: suffix_lists(path) for name, path in MODULES.items()}
    assert {name for name, lines in found.items() if lines} == {"emmafuse.image_io"}


def test_one_pairing_function() -> None:
    defined = [
        name
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name == "pair_folders"
    ]
    assert defined == ["emmafuse.image_io"]
    for user in ("emmafuse.cli.fuse", "emmafuse.evaluation.scoring", "emmafuse.train.data"):
        assert "emmafuse.image_io" in _edges(user) and "pair_folders" in MODULES[user].read_text(encoding="utf-8")
