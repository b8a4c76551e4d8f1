"""The dependency rule of docs/architecture.md, checked on the code's own imports.

The graph is built with `ast` from every import statement of the project's packages, also
those inside functions (lazy imports are still edges a reader must follow):

- `perception/` imports nothing from `models/`, `serving/` or `sim_bridge/`, except the lazy
  PyTorch backend of our own network (`perception/pipeline.py` -> `models.torch_runtime`) and
  the lazy subcommand table of `perception/cli.py`, the one composition root;
- `serving/` and `sim_bridge/` import nothing from `models/`;
- inside `perception/`, each room imports only from itself and the rooms below it: the core
  chain (with the zoo it resolves names with), driving, overlay, logs, commands, cli;
- no import cycle among the project's own modules, and no import by string (`importlib`).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("perception", "models", "serving", "sim_bridge")
LAZY_EXCEPTIONS = {("perception.pipeline", "models.torch_runtime")}  # a .pt model only
COMPOSITION_ROOT = "perception.cli"
LAYERS = (("perception.driving",), ("perception.overlay",), ("perception.logs",),
          ("perception.commands",), ("perception.cli", "perception.__main__"))  # above core


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))
            if "proto" not in path.relative_to(ROOT).parts}  # generated gRPC code


class Imports(ast.NodeVisitor):
    """The project modules one module imports: target -> True if only inside functions."""

    def __init__(self, name: str, is_package: bool, modules: set[str]) -> None:
        self.name, self.is_package, self.modules = name, is_package, modules
        self.lazy: dict[str, bool] = {}
        self.strings: list[int] = []  # lines that import by string
        self.depth = 0

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:  # noqa: N802 (ast's name)
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
        for alias in node.names:
            self.add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        if node.level:  # relative: resolve against this module's package
            base = self.name if self.is_package else self.name.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        if source == "importlib" or any(alias.name == "importlib" for alias in node.names):
            self.strings.append(node.lineno)
        for alias in node.names:
            self.add(f"{source}.{alias.name}")

    def visit_Attribute(self, node: ast.Attribute) -> None:  # noqa: N802
        if node.attr == "import_module":
            self.strings.append(node.lineno)
        self.generic_visit(node)

    def add(self, target: str) -> None:
        if target.partition(".")[0] == "importlib":
            self.strings.append(0)
        while target and target not in self.modules:  # `from a.b import name`: module a.b
            target = target.rpartition(".")[0]
        if target and target != self.name:
            self.lazy[target] = self.lazy.get(target, True) and self.depth > 0


def import_graph() -> dict[str, Imports]:
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        visitor = Imports(name, path.name == "__init__.py", set(modules))
        visitor.visit(ast.parse(path.read_text()))
        graph[name] = visitor
    return graph


def top(name: str) -> str:
    return name.split(".", 1)[0]


def layer(name: str) -> int:
    """0 for the core chain (perception/'s top-level modules and perception/zoo/), then up."""
    for index, prefixes in enumerate(LAYERS, start=1):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return index
    return 0


def test_the_graph_sees_lazy_imports() -> None:
    graph = import_graph()
    assert graph["perception.pipeline"].lazy["models.torch_runtime"] is True
    assert graph[COMPOSITION_ROOT].lazy["serving.cli"] is True
    assert graph["perception.commands.run"].lazy["perception.pipeline"] is False


def test_the_runtime_does_not_depend_on_training_serving_or_the_simulator() -> None:
    wrong = []
    for source, imports in import_graph().items():
        if top(source) != "perception":
            continue
        for target, lazy in sorted(imports.lazy.items()):
            if top(target) not in {"models", "serving", "sim_bridge"}:
                continue
            allowed = source == COMPOSITION_ROOT or (source, target) in LAZY_EXCEPTIONS
            if not (allowed and lazy):
                wrong.append((source, target))
    assert not wrong, f"perception/ importing from another package: {wrong}"


def test_serving_and_the_simulator_bridge_do_not_import_models() -> None:
    wrong = [(source, target) for source, imports in import_graph().items()
             if top(source) in {"serving", "sim_bridge"}
             for target in sorted(imports.lazy) if top(target) == "models"]
    assert not wrong, f"importing the training package: {wrong}"


def test_each_room_of_perception_imports_only_from_below() -> None:
    wrong = [f"{source} -> {target}" for source, imports in import_graph().items()
             if top(source) == "perception"
             for target in sorted(imports.lazy)
             if top(target) == "perception" and layer(target) > layer(source)]
    assert not wrong, "a room importing from a room above it:\n" + "\n".join(wrong)


def test_nothing_is_imported_by_string() -> None:
    wrong = {name: imports.strings for name, imports in import_graph().items()
             if imports.strings}
    assert not wrong, f"imports by string (importlib) hide edges from readers: {wrong}"


def test_no_import_cycles() -> None:
    graph = {name: set(imports.lazy) for name, imports in import_graph().items()}
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
