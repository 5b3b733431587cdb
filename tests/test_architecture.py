"""The rules of docs/architecture.md, checked on the import graph of actreg_cli.

Every `import` counts, also one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "actreg_cli"
#: Each top-level part of actreg_cli and its place in the flow; a module may import modules of
#: its own part and of lower ranks only. Rank 0: leaf helpers at the package root.
RANKS = {
    "tasks": 0, "weights": 0, "stats": 0, "versions": 0, "quiet_tensorflow": 0,
    "custom_regularizers": 0,
    "config": 1, "data": 2, "models": 3, "engines": 4, "study": 5, "report": 6,
    "api": 7, "cli": 8, "__main__": 9,
}  # fmt: skip
MAX_LINES = 600
MAX_ROOT_MODULES = 8
#: Calls that write a file; only study/files.py (atomic writes) may make them.
WRITING_CALLS = {"write_text", "write_bytes", "savefig", "savez", "savez_compressed", "replace",
                 "rename", "to_csv", "to_parquet", "mkstemp"}  # fmt: skip
WRITER = "actreg_cli.study.files"
HEAVY = ("tensorflow", "keras", "jax")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The actreg_cli modules `name` imports (resolved to modules, not names in them)."""
    path = MODULES[name]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = name.split(".")[
                    : len(name.split(".")) - node.level + (path.name == "__init__.py")
                ]
                base = ".".join([*up, base] if base else up)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target != "actreg_cli":
                found.add(target)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def part(name: str) -> str:
    return name.split(".")[1] if "." in name else ""


def test_no_import_circle():
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        seen[name] = 1
        for other in sorted(GRAPH[name]):
            if name.startswith(other + "."):  # a module importing its own package
                continue
            if seen.get(other) == 1:
                cycle = path[path.index(other) :] + [other]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if other not in seen:
                visit(other, [*path, other])
        seen[name] = 2

    for name in MODULES:
        if name not in seen:
            visit(name, [name])


def test_imports_follow_the_flow():
    """config -> data -> models -> engines -> study -> report -> api -> cli: nothing imports
    upward."""
    wrong = []
    for name, targets in GRAPH.items():
        if part(name) not in RANKS:
            continue
        for target in targets:
            if part(target) in RANKS and RANKS[part(target)] > RANKS[part(name)]:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_engines_import_no_study_report_or_cli():
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if part(name) == "engines"
        for target in targets
        if part(target) in ("study", "report", "cli")
    ]
    assert wrong == []


def test_report_imports_no_engine():
    """The report reads stored results; the job and result types of engines.base are all it
    may know of engines."""
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if part(name) == "report"
        for target in targets
        if part(target) == "engines" and target != "actreg_cli.engines.base"
    ]
    assert wrong == []


@pytest.mark.parametrize("package", ["actreg_cli.config", "actreg_cli.report"])
def test_config_and_report_load_no_tensorflow_keras_or_jax(package: str):
    """Importing every module of the package (as `validate`, `report`, `runs`, `compare` do)
    loads none of TensorFlow, Keras or JAX: they cost seconds and ~1 GB."""
    names = [name for name in MODULES if name == package or name.startswith(package + ".")]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip() == "[]"


def test_only_the_store_writes_files():
    """Result files are written in one place, atomically (study/files.py): nothing else opens a
    file for writing or renames one into place."""
    wrong = []
    for name, path in MODULES.items():
        if name == WRITER:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(getattr(func, "value", None), "id", "")
            if called in ("replace", "rename") and not (owner == "os" or len(node.args) == 1):
                continue  # str.replace(old, new), dataclasses.replace(obj, **changes)
            if called == "replace" and owner == "dataclasses":
                continue
            if called in ("write_text", "write_bytes") and not isinstance(func, ast.Attribute):
                continue  # study.files.write_text: the atomic writer itself
            if called in WRITING_CALLS:
                wrong.append(f"{name}:{node.lineno} {called}()")
            if called == "open" and any(
                isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and set(arg.value) & set("wax+")
                for arg in [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "mode")]
            ):
                wrong.append(f"{name}:{node.lineno} open(..., write)")
    assert wrong == []


def test_no_private_name_imported_across_modules():
    wrong = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("actreg_cli"):
                wrong += [
                    f"{name}: from {node.module} import {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert wrong == []


def test_modules_are_small_and_the_root_holds_few():
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
    root = [p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")]
    assert len(root) <= MAX_ROOT_MODULES, root
    assert set(root) <= set(RANKS), f"a new root module needs its place in RANKS: {root}"
