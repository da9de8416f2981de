"""The package's shape: what ``import toolplex`` loads, and the layers' import order."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import toolplex

PACKAGE = Path(toolplex.__file__).parent
TRANSPORT = {"starlette", "uvicorn", "redis", "prometheus_client", "ag_ui", "sse_starlette",
             "websockets", "toolplex.server", "toolplex.demo", "toolplex.backends.redis"}


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


def test_import_toolplex_loads_the_runtime_alone() -> None:
    loaded = _loaded_after("import toolplex")
    transport = {m for m in loaded if m in TRANSPORT or m.split(".")[0] in TRANSPORT}
    assert not transport, f"import toolplex must not load the transport: {sorted(transport)}"


def test_create_app_is_loaded_from_the_root_on_first_use() -> None:
    loaded = _loaded_after("from toolplex import Settings, create_app")
    assert {"toolplex.server", "starlette"} <= loaded
    from toolplex.server import Settings, create_app

    assert (toolplex.create_app, toolplex.Settings) == (create_app, Settings)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every toolplex module ``path`` imports, also under TYPE_CHECKING or in a function."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            found |= submodules or {target}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return (found & modules) - {name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return cycles


def test_no_two_modules_import_each_other_even_lazily() -> None:
    paths = list(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports(p, modules) for p in paths}
    assert not _cycles(graph), "each layer imports only the layers below it"


def test_no_runtime_module_imports_the_server_or_the_demo() -> None:
    """The runtime and the backends are libraries: the transport sits above them."""
    paths = [p for p in PACKAGE.rglob("*.py")
             if p.relative_to(PACKAGE).parts[0] not in {"server", "demo", "cli.py"}]
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in paths:
        upward = {m for m in _imports(path, modules)
                  if m.startswith(("toolplex.server", "toolplex.demo"))}
        if path.name == "__init__.py" and path.parent == PACKAGE:
            upward -= {"toolplex.server"}  # create_app and Settings, on first use
        assert not upward, f"{_module_name(path)} imports {sorted(upward)}"
