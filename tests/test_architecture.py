"""The plan of docs/architecture.md holds: every module lives in a listed folder, no folder imports
a higher one (so the folder graph has no cycle), the module graph has no cycle, no two modules
share a file name, the top level stays small, and each folder's docstring names what it holds.

Imports are read from the source (module level and inside functions alike), so a lazy import
counts as much as a top-level one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The folders of harness/, lowest first; a folder may import its own modules and lower folders only.
FOLDERS: tuple[str, ...] = ("core", "data", "objectives", "backbones", "pretraining", "methods", "training",
                            "evaluation", "reporting", "experiments", "measure")
#: The modules at the top of harness/: the package (its version), the command line and `python -m harness`.
TOP_LEVEL = {"harness": "harness/__init__.py", "harness.cli": "harness/cli.py",
             "harness.__main__": "harness/__main__.py"}
INTERFACE = len(FOLDERS)  # the top-level modules sit above every folder


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "harness").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (``from a import b`` counts a.b when that is a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name in modules}


def _layer(module: str) -> int:
    """The rank of the folder ``module`` lives in (INTERFACE for the top-level modules)."""
    if module in TOP_LEVEL:
        return INTERFACE
    folder = module.split(".")[1]
    assert folder in FOLDERS, f"{module} is in no folder of tests/test_architecture.py (and docs/architecture.md)"
    return FOLDERS.index(folder)


def _name(layer: int) -> str:
    return "interface" if layer == INTERFACE else FOLDERS[layer]


def test_every_module_lives_in_a_listed_folder():
    modules = _modules()
    assert [module for module in modules if module not in TOP_LEVEL and module.split(".")[1] not in FOLDERS] == []
    assert sorted(path.name for path in (ROOT / "harness").glob("*.py")) == ["__init__.py", "__main__.py", "cli.py"]
    assert sorted(path.name for path in (ROOT / "harness").iterdir() if path.is_dir() and path.name != "__pycache__") \
        == sorted(FOLDERS)


def test_no_folder_imports_a_higher_one():
    modules = _modules()
    upward = [f"{module} ({_name(_layer(module))}) -> {target} ({_name(_layer(target))})"
              for module, path in modules.items() for target in _imports(path, modules)
              if _layer(target) > _layer(module)]
    assert upward == []


def test_the_folder_graph_has_no_cycle():
    """Checked on its own, not only through the order above: a new folder or a reordered list
    cannot hide a cycle between two folders."""
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        for target in _imports(path, modules):
            source, sink = _name(_layer(module)), _name(_layer(target))
            if source != sink:
                edges.setdefault(source, set()).add(sink)
    remaining = {folder: set(targets) for folder, targets in edges.items()}
    while remaining:  # peel folders that import no remaining folder (Kahn); what cannot be peeled is a cycle
        leaves = {folder for folder, targets in remaining.items() if not targets & remaining.keys()}
        assert leaves, f"folders importing each other: {sorted(remaining)}"
        remaining = {folder: targets for folder, targets in remaining.items() if folder not in leaves}


def test_the_module_graph_has_no_cycle():
    modules = _modules()
    graph = {module: _imports(path, modules) - {module} for module, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target] if target in path else [module, target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    # a package's __init__ importing its own modules is not a cycle of the code (registration, public surface)
    assert [c for c in cycles if not _package_registration(c)] == []


def _package_registration(cycle: list[str]) -> bool:
    return len(cycle) == 3 and cycle[0] == cycle[2] and cycle[1].startswith(cycle[0] + ".")


def test_no_two_modules_share_a_file_name():
    names: dict[str, list[str]] = {}
    for path in (ROOT / "harness").rglob("*.py"):
        if path.name != "__init__.py":
            names.setdefault(path.stem, []).append(str(path.relative_to(ROOT)))
    assert {stem: paths for stem, paths in names.items() if len(paths) > 1} == {}


def test_each_folder_says_what_it_holds():
    """A folder's __init__ docstring names every module and sub-folder in it (``name``)."""
    unnamed = []
    for init in (ROOT / "harness").rglob("__init__.py"):
        folder = init.parent
        if folder == ROOT / "harness":
            continue
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        named = set(re.findall(r"``(\w+)/?``", docstring))
        members = {p.stem for p in folder.glob("*.py") if p.name != "__init__.py"}
        members |= {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
        unnamed += [f"{folder.relative_to(ROOT)}/{member}" for member in sorted(members - named)]
    assert unnamed == []


def test_the_architecture_doc_lists_every_folder():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawn = text[text.index("## The folders"):text.index("## The data flow")]
    assert [folder for folder in FOLDERS if not re.search(rf"(?<![\w/]){folder}/", drawn)] == []


def test_the_code_keeps_the_house_width_and_import_order():
    """pyproject.toml's ruff settings hold: no line over 120 columns, imports sorted (`ruff check --fix`)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "harness", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
