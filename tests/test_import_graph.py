"""The dependency rule of docs/architecture.md, checked on the code's own imports.

The graph is built with `ast` from every import statement of the project's packages, also
those inside functions (lazy imports are still edges a reader must follow):

- `perception/` imports nothing from `models/`, `serving/` or `sim_bridge/`, except the lazy
  PyTorch backend of our own network (`perception/pipeline.py` -> `models.torch_runtime`) and
  the subcommand table of `perception/cli.py`, the one composition root;
- `serving/` and `sim_bridge/` import nothing from `models/`;
- no import cycle among the project's own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("perception", "models", "serving", "sim_bridge")
ALLOWED_FROM_PERCEPTION = {
    ("perception.pipeline", "models.torch_runtime"),  # our network's PyTorch path, when asked
}
COMPOSITION_ROOT = "perception.cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))
            if "proto" not in path.relative_to(ROOT).parts}  # generated gRPC code


def imported(tree: ast.AST, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The project modules one module imports, anywhere in its body."""
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:  # `from a.b import name`: the module a.b
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                add(f"{source}.{alias.name}")
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported(ast.parse(path.read_text()), name, path.name == "__init__.py",
                           set(modules))
            for name, path in modules.items()}


def top(name: str) -> str:
    return name.split(".", 1)[0]


def test_the_graph_sees_lazy_imports() -> None:
    graph = import_graph()
    assert "models.torch_runtime" in graph["perception.pipeline"]  # inside a function
    assert "serving.cli" in graph[COMPOSITION_ROOT]


def test_the_runtime_does_not_depend_on_training_serving_or_the_simulator() -> None:
    wrong = [(source, target) for source, targets in import_graph().items()
             if top(source) == "perception" and source != COMPOSITION_ROOT
             for target in sorted(targets)
             if top(target) in {"models", "serving", "sim_bridge"}
             and (source, target) not in ALLOWED_FROM_PERCEPTION]
    assert not wrong, f"perception/ importing from another package: {wrong}"


def test_serving_and_the_simulator_bridge_do_not_import_models() -> None:
    wrong = [(source, target) for source, targets in import_graph().items()
             if top(source) in {"serving", "sim_bridge"}
             for target in sorted(targets) if top(target) == "models"]
    assert not wrong, f"importing the training package: {wrong}"


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
