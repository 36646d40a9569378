"""The layers of docs/architecture.md hold: every module has a layer, no module imports one of a
higher layer, the module graph has no cycle, and no two modules share a file name.

Imports are read from the source (module level and inside functions alike), so a lazy import
counts as much as a top-level one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: (layer, module prefixes), lowest first; a module belongs to the layer of its longest prefix
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("harness", "harness.errors", "harness.paths", "harness.device", "harness.distributed",
                    "harness.environment", "harness.process", "harness.schedule", "harness.losses", "harness.metrics",
                    "harness.activation_memory", "harness.embedding_file", "harness.files", "harness.secrets",
                    "harness.tokenization", "harness.reporting.stats")),
    ("data", ("harness.data",)),
    ("contract", ("harness.protocol", "harness.results", "harness.scoring", "harness.retrieval", "harness.intent",
                  "harness.group_metrics",
                  "harness.embedding_cache")),
    ("models", ("harness.backbones", "harness.stage0", "harness.stage0_instruct", "harness.stage0_qformer",
                "harness.warm_start", "harness.cir_lvlm", "harness.methods", "harness.registry",
                "harness.checkpoint", "baselines")),
    ("loops", ("harness.train", "harness.grad_cache", "harness.evaluate")),
    ("experiments", ("harness.config", "harness.recording", "harness.executor", "harness.runner",
                     "harness.parallel", "harness.sweep", "harness.tracking", "harness.run_folder",
                     "harness.reevaluate", "harness.rescore", "harness.submission", "harness.memory_estimate",
                     "harness.bench", "harness.reporting")),
    ("interface", ("harness.cli", "harness.__main__")),
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("harness", "baselines"):
        for path in (ROOT / package).rglob("*.py"):
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
    best = (-1, -1)
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = (len(prefix), rank)
    assert best[1] >= 0, f"{module} has no layer in tests/test_architecture.py (and docs/architecture.md)"
    return best[1]


def test_no_module_imports_a_higher_layer():
    modules = _modules()
    upward = [f"{module} ({LAYERS[_layer(module)][0]}) -> {target} ({LAYERS[_layer(target)][0]})"
              for module, path in modules.items() for target in _imports(path, modules)
              if _layer(target) > _layer(module)]
    assert upward == []


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
    # a package's __init__ importing its own modules is not a cycle of the code (registration)
    assert [c for c in cycles if not _package_registration(c)] == []


def _package_registration(cycle: list[str]) -> bool:
    return len(cycle) == 3 and cycle[0] == cycle[2] and cycle[1].startswith(cycle[0] + ".")


def test_no_two_modules_share_a_file_name():
    names: dict[str, list[str]] = {}
    for path in (ROOT / "harness").rglob("*.py"):
        if path.name != "__init__.py":
            names.setdefault(path.stem, []).append(str(path.relative_to(ROOT)))
    assert {stem: paths for stem, paths in names.items() if len(paths) > 1} == {}
