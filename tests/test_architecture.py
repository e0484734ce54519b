"""The rules of ``docs/architecture.md``, checked on the source (static; only the light-import test runs code).

- the layers: every module is in one layer of the doc's table, and imports (lazy ones inside
  functions included) only from its own layer or the ones below;
- only ``emmafuse/cli/`` imports argparse, and only it and the ``python -m`` entry points import it;
- no module imports the package ``emmafuse`` itself (its ``__init__`` only re-exports);
- the graph of imports between emmafuse modules has no cycle;
- ``import emmafuse``, ``emmafuse --version`` and ``emmafuse --help`` do not import torch;
- sizes: no module above 450 lines, no function above 60 (its docstring not counted);
- errors: no ``raise`` of a built-in exception outside ``cli/`` (every library error derives from
  ``EmmafuseError``), and no string outside ``cli/`` names a command-line flag;
- one suffix list and one pairing function, in ``emmafuse.image_io``.

The size and error rules list every offender in one message.
"""

from __future__ import annotations

import ast
import builtins
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "emmafuse"
DOC = ROOT / "docs" / "architecture.md"


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
    for user in ("emmafuse.folder_fusion", "emmafuse.evaluation.planning", "emmafuse.train.data"):
        assert "emmafuse.image_io" in _edges(user) and "pair_folders" in MODULES[user].read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- layers
def _doc_layers() -> list[tuple[str, list[str]]]:
    """The layer table of docs/architecture.md, top to bottom: ``(layer, module tokens)``.

    The table follows the heading ``## Layers``; its second column lists modules in backticks:
    ``name`` (``emmafuse.name``), ``pkg/`` (the package and all its modules), ``pkg/name``.
    """
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and "`" in cells[1]:
            rows.append((cells[0], re.findall(r"`([^`]+)`", cells[1])))
    return rows


def _resolve(token: str) -> tuple[str, bool]:
    """``(module name, is_package_prefix)`` of a token of the layer table."""
    name = "emmafuse." + token.rstrip("/").replace("/", ".")
    return name, token.endswith("/")


def _layer_index() -> dict[str, int]:
    """Every emmafuse module (but the package's ``__init__``) -> its layer (0 = bottom)."""
    layers = list(reversed(_doc_layers()))
    index: dict[str, int] = {}
    for module in MODULES:
        best: tuple[int, int] | None = None  # (specificity, layer)
        for rank, (_, tokens) in enumerate(layers):
            for token in tokens:
                name, prefix = _resolve(token)
                if module == name and not prefix:
                    hit = (10_000, rank)
                elif prefix and (module == name or module.startswith(name + ".")):
                    hit = (len(name), rank)
                else:
                    continue
                best = hit if best is None or hit[0] > best[0] else best
        if best is not None:
            index[module] = best[1]
    return index


def test_the_doc_lists_the_layers() -> None:
    layers = _doc_layers()
    names = [name for name, _ in layers]
    assert names[0] == "command line" and names[-1] == "base" and len(names) >= 6, names
    stale = [t for _, tokens in layers for t in tokens if _resolve(t)[0] not in MODULES]
    assert stale == [], f"docs/architecture.md names modules that do not exist: {stale}"


def test_every_module_is_in_a_layer() -> None:
    index = _layer_index()
    missing = sorted(m for m in MODULES if m != "emmafuse" and m not in index)
    assert missing == [], f"add these modules to the layer table of docs/architecture.md: {missing}"


def test_modules_import_only_from_their_layer_or_below() -> None:
    index = _layer_index()
    names = [name for name, _ in reversed(_doc_layers())]
    upward = [
        f"{module} ({names[index[module]]}) imports {target} ({names[index[target]]})"
        for module in sorted(index)
        for target in sorted(_edges(module))
        if target in index and index[target] > index[module]
    ]
    assert upward == [], "imports from a higher layer:\n  " + "\n  ".join(upward)


# ----------------------------------------------------------------------------- light imports
_NO_TORCH = """
import runpy, sys
sys.argv = ["emmafuse", *sys.argv[1:]]
try:
    runpy.run_module("emmafuse", run_name="__main__") if len(sys.argv) > 1 else __import__("emmafuse")
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = sorted(m for m in ("torch", "numpy", "PIL", "emmafuse.fuser", "emmafuse.train") if m in sys.modules)
sys.stderr.write(f"HEAVY={heavy}\\n")
"""


@pytest.mark.parametrize("argv", [[], ["--version"], ["--help"]], ids=["import", "version", "help"])
def test_import_and_version_and_help_do_not_import_torch(argv: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(PKG.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=[]" in proc.stderr, proc.stderr


def test_lazy_names_of_the_package_resolve() -> None:
    import emmafuse

    assert set(emmafuse.__all__) <= set(dir(emmafuse))
    for name in emmafuse.__all__:
        assert getattr(emmafuse, name) is not None
    with pytest.raises(AttributeError):
        emmafuse.no_such_name  # noqa: B018


def test_the_command_table_matches_the_command_modules() -> None:
    """``cli.COMMANDS`` lists every command with the summary its module gives it (the top-level
    help shows the table's summaries without importing the modules)."""
    import argparse

    from emmafuse.cli import COMMANDS, build_parser

    for name, (_module, _adder, summary) in COMMANDS.items():
        parser = build_parser([name])
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        helps = {a.dest: a.help for a in sub._choices_actions}
        assert set(helps) == set(COMMANDS) and helps[name] == summary, name
        assert sub.choices[name].format_usage().startswith(f"usage: emmafuse {name}")


# ----------------------------------------------------------------------------- sizes
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the end, without the docstring (decorators not counted)."""
    assert node.end_lineno is not None
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        assert first.end_lineno is not None
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_module_or_function_is_too_long() -> None:
    offenders = []
    for name, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            offenders.append(f"module {name}: {len(text.splitlines())} lines (limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _function_lines(node) > MAX_FUNCTION_LINES:
                offenders.append(
                    f"function {name}:{node.lineno} {node.name}: {_function_lines(node)} lines (limit {MAX_FUNCTION_LINES})"
                )
    assert offenders == [], f"{len(offenders)} over the size limits:\n  " + "\n  ".join(offenders)


# ----------------------------------------------------------------------------- errors
_BUILTIN_EXCEPTIONS = {
    name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
} - {"NotImplementedError"}


def _library_modules() -> dict[str, Path]:
    """Every module below the command-line layer (``cli/`` and the ``python -m`` entry points)."""
    index = _layer_index()
    top = max(index.values())
    return {name: path for name, path in MODULES.items() if index.get(name, 0) < top}


#: Exceptions a protocol method must raise: ``__getattr__`` (PEP 562 too), ``__next__``.
_PROTOCOL_RAISES = {"__getattr__": "AttributeError", "__next__": "StopIteration"}


def _builtin_raises(tree: ast.AST) -> Iterator[ast.Raise]:
    """``raise ValueError(...)`` and friends. A re-raise of a caught exception (a variable) is
    fine, and so is the exception a protocol method must raise (:data:`_PROTOCOL_RAISES`)."""
    allowed = {
        (id(node), _PROTOCOL_RAISES[f.name])
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef) and f.name in _PROTOCOL_RAISES
        for node in ast.walk(f)
        if isinstance(node, ast.Raise)
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(target, ast.Name) and target.id in _BUILTIN_EXCEPTIONS and (id(node), target.id) not in allowed:
            yield node


def test_the_library_raises_only_emmafuse_errors() -> None:
    offenders = [
        f"{name}:{node.lineno}: {ast.unparse(node)[:100]}"
        for name, path in _library_modules().items()
        for node in _builtin_raises(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == [], (
        f"{len(offenders)} raise a built-in exception; raise an emmafuse error class instead "
        "(it derives from the built-in too):\n  " + "\n  ".join(offenders)
    )


def _cli_flags() -> set[str]:
    """Every ``--flag`` an ``add_argument`` call of ``emmafuse.cli`` defines."""
    flags = set()
    for name, path in MODULES.items():
        if name == "emmafuse.cli" or name.startswith("emmafuse.cli."):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                    flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")}
    return flags


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_no_library_message_names_a_command_line_flag() -> None:
    flags = _cli_flags()
    assert {"--weights", "--tile", "--tile-overlap", "--version"} <= flags  # the scan found them
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(f) for f in sorted(flags, key=len, reverse=True)) + r")(?![\w-])")
    offenders = []
    for name, path in _library_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                hit = pattern.search(node.value)
                if hit:
                    offenders.append(f"{name}:{node.lineno}: {hit.group(1)} in {node.value[:80]!r}")
    assert offenders == [], (
        f"{len(offenders)} library strings name a command-line flag; name the parameter and pass "
        "parameter=... (the CLI adds the flag):\n  " + "\n  ".join(offenders)
    )


def test_no_module_changes_the_process_umask_at_import() -> None:
    """``os.umask`` can only be read by setting it, which races with other threads; importing a
    module must not do it (``_fs`` once did)."""
    offenders = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)}
        offenders += [
            f"{name}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "umask" and id(node) not in in_functions
        ]
    assert offenders == []
