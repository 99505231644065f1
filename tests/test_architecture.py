"""The direction of imports is the architecture (docs/architecture.md):

    cli/app -> transport -> service -> store / broker / auth / models ...
    transport -> wire;  wire -> nothing of notifier

These tests read every module's imports (those that run: not the ones under TYPE_CHECKING)
and fail when a layer reaches the wrong way, or when notifier's modules import in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import notifier

PACKAGE = Path(notifier.__file__).parent
FRAMEWORKS = ("aiohttp", "socketio", "engineio")
# What sits above the service: the web application, its transports, the wire layer, the
# clients for other processes, and the typed app keys.
ABOVE_SERVICE = (
    "notifier.app",
    "notifier.cli",
    "notifier.__main__",
    "notifier.keys",
    "notifier.transport",
    "notifier.wire",
    "notifier.client",
    "notifier",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, types_too: bool) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if not types_too and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # types only: never imported when the code runs
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def imports_of(path: Path, types_too: bool = False) -> set[str]:
    """Absolute names of the modules `path` imports when it runs (`types_too`: and for its
    type annotations)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    result: set[str] = set()
    for node in _imports(ast.parse(path.read_text()), types_too):
        if isinstance(node, ast.Import):
            result.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            origin = ".".join([*base, node.module] if node.module else base)
        else:
            origin = node.module or ""
        result.add(origin)
        for alias in node.names:  # `from . import x` may name a module
            candidate = f"{origin}.{alias.name}"
            if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
            ).exists():
                result.add(candidate)
    return result


MODULES = {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}
# For circles, type-only imports count too: a circle of types is a circle of design.
ALL_IMPORTS = {module_name(path): imports_of(path, True) for path in sorted(PACKAGE.rglob("*.py"))}


def _is(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _above_service(name: str) -> bool:
    return name == "notifier" or any(_is(name, p) for p in ABOVE_SERVICE if p != "notifier")


def test_the_wire_layer_imports_nothing_of_notifier() -> None:
    offending = {
        module: sorted(i for i in imported if _is(i, "notifier") and not _is(i, "notifier.wire"))
        for module, imported in MODULES.items()
        if _is(module, "notifier.wire")
    }
    assert not {m: i for m, i in offending.items() if i}, offending


def test_nothing_below_the_transport_imports_a_web_or_socket_framework() -> None:
    below = [m for m in MODULES if not _above_service(m)]
    assert "notifier.service" in below and "notifier.store.sqlite" in below
    assert "notifier.broker.redis" in below and "notifier.auth" in below
    offending = {
        module: sorted(i for i in MODULES[module] if any(_is(i, f) for f in FRAMEWORKS)) for module in below
    }
    assert not {m: i for m, i in offending.items() if i}, offending


def test_nothing_below_the_transport_imports_the_transport_or_the_wire() -> None:
    below = [m for m in MODULES if not _above_service(m)]
    offending = {
        module: sorted(i for i in MODULES[module] if _above_service(i) and _is(i, "notifier"))
        for module in below
    }
    # `from . import __version__` names the package itself, which is not a layer.
    offending = {m: [i for i in found if i != "notifier"] for m, found in offending.items()}
    assert not {m: i for m, i in offending.items() if i}, offending


def cycles(modules: dict[str, set[str]]) -> list[list[str]]:
    graph = {m: sorted(i for i in imported if i in modules and i != m) for m, imported in modules.items()}
    # A package's __init__ re-exporting its modules is not a cycle through them.
    for module in graph:
        graph[module] = [i for i in graph[module] if not _is(module, i) or i == module]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            connect(module)
    return found


def test_notifiers_modules_import_in_no_circle() -> None:
    assert cycles(ALL_IMPORTS) == []
