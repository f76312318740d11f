"""The code version of a stage: a hash of the source that computes it.

A stage's code version covers the module that declares it and every module of the same
package tree it imports, directly or not, wherever the import stands (top level or inside a
function) and however it is spelt (``import tasks.a.b``, ``from tasks.a import b``,
``from ..a import b``). Each file is hashed under its path relative to its package root, so two
modules with one file name never collide, and the package ``__init__`` files a module runs on
import count too. Editing any of them changes the key of exactly the stages that import it
(and, through their keys, of the stages downstream).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def _package_root(top: str) -> Path | None:
    """The folder that holds top-level package ``top`` (found without importing anything)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).parent


@lru_cache(maxsize=None)
def module_path(name: str) -> Path | None:
    """The source file of module ``name`` (a package's ``__init__.py``), or None; read off the
    file system, so nothing is imported."""
    root = _package_root(name.split(".")[0])
    if root is None:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _resolve_relative(module: str, level: int, current: str, *, is_package: bool) -> str:
    parts = current.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, module] if module else base)


_IMPORT_START = re.compile(r"^[ \t]*(?:from[ \t]+[.\w]+[ \t]+import\b|import[ \t]+[\w.])", re.M)


def import_statements(source: str) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``source``, wherever it stands (top level, inside functions).

    Only the lines that start an import are parsed (with the lines a parenthesised or
    backslash-continued import runs on), not the whole file: a rerun computes every stage's code
    version, and this is ten times faster than parsing the source. A line inside a string that
    reads like an import is counted too, which can only add a module to a closure, never drop one.
    """
    nodes: list[ast.Import | ast.ImportFrom] = []
    for match in _IMPORT_START.finditer(source):
        end = source.find("\n", match.start())
        end = len(source) if end < 0 else end
        text = source[match.start():end].strip()
        while True:
            try:
                tree = ast.parse(text)
                break
            except SyntaxError:
                if text.endswith("\\") and end < len(source):  # continued on the next line
                    nxt = source.find("\n", end + 1)
                    nxt = len(source) if nxt < 0 else nxt
                    text, end = text[:-1] + " " + source[end + 1:nxt].strip(), nxt
                elif "(" in text and ")" not in text and source.find(")", end) >= 0:  # names over lines
                    close = source.find(")", end)
                    text, end = source[match.start():close + 1].strip(), close + 1
                else:
                    tree = None
                    break
        if tree is not None:
            nodes += [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return nodes


@lru_cache(maxsize=None)
def imported_modules(name: str, *, top: str) -> frozenset[str]:
    """Dotted names of the modules under package ``top`` that module ``name`` imports anywhere,
    with the packages whose ``__init__`` runs on the way."""
    path = module_path(name)
    if path is None:
        return frozenset()
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in import_statements(path.read_text(encoding="utf-8")):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(node.module or "", node.level, name, is_package=is_package) if node.level
                    else node.module or "")
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    out: set[str] = set()
    for dotted in found:
        if dotted != top and not dotted.startswith(top + "."):
            continue
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):  # the packages imported on the way, and the module
            prefix = ".".join(parts[:i])
            if module_path(prefix) is not None:
                out.add(prefix)
    return frozenset(out)


def module_closure(modules: tuple[str, ...] | list[str]) -> list[str]:
    """``modules`` and every module of their package trees they import, transitively (sorted)."""
    todo, seen = list(modules), set()
    while todo:
        m = todo.pop()
        if m in seen or module_path(m) is None:
            continue
        seen.add(m)
        todo.extend(imported_modules(m, top=m.split(".")[0]))
    return sorted(seen)


def source_hash(modules: list[str]) -> str:
    """sha256 (16 hex) of the modules' sources, each under its path relative to its package root."""
    h = hashlib.sha256()
    for m in sorted(modules):
        path = module_path(m)
        assert path is not None
        depth = m.count(".") + (2 if path.name == "__init__.py" else 1)
        rel = path.relative_to(path.parents[depth - 1]).as_posix()
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@lru_cache(maxsize=None)
def code_version(module: str) -> str:
    """The code version of the stage declared in ``module`` (see the module docstring)."""
    return source_hash(module_closure([module]))
