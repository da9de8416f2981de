"""The package's shape: what ``import toolplex`` loads, and the layers' import order."""

from __future__ import annotations

import ast
import inspect
import itertools
import subprocess
import sys
import types
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


# What `from __future__` and `typing` put into the root module's namespace.
_NOT_EXPORTS = {"annotations", "TYPE_CHECKING", "Any"}


def _attribute_docstring(name: str) -> str | None:
    """The string right after ``name = ...`` at module level somewhere in the package."""
    for path in PACKAGE.rglob("*.py"):
        body = ast.parse(path.read_text()).body
        for node, after in itertools.pairwise(body):
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and (
                    isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)):
                return str(after.value.value)
    return None


class TestPublicNames:
    def test_all_is_sorted_and_at_most_30_names(self) -> None:
        assert toolplex.__all__ == sorted(toolplex.__all__)
        assert len(toolplex.__all__) <= 30, "STYLE: the public face is 15-30 names"

    def test_all_is_every_public_name_of_the_package(self) -> None:
        public = {name for name, value in vars(toolplex).items()
                  if not name.startswith("_") and not inspect.ismodule(value)}
        lazy = {"Settings", "create_app"}  # loaded from toolplex.server on first use
        assert set(toolplex.__all__) == (public - _NOT_EXPORTS) | lazy

    def test_every_exported_name_has_a_docstring(self) -> None:
        for name in toolplex.__all__:
            value = getattr(toolplex, name)
            if inspect.isclass(value):
                doc = vars(value).get("__doc__")
            elif callable(value) and not isinstance(value, types.UnionType):
                doc = value.__doc__
            else:
                doc = _attribute_docstring(name)
            assert doc and doc.strip(), f"toolplex.{name} needs a docstring"
