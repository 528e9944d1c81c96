"""The service's layers, read from the source: imports point down only (http -> serving ->
models -> engines), every layer may use the leaf faults module, and no module of the
package imports itself back through others (no import circle)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "modelcache"
LAYERS = ["engines", "models", "serving", "http"]  # lowest first


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str], *, type_hints: bool) -> set[str]:
    """The modelcache modules ``path`` imports, at any depth of its code; those under
    ``if TYPE_CHECKING:`` (type hints only, never run) only with ``type_hints``.
    ``from package import module`` counts as importing the module (the package is
    already initialised by then)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if not type_hints and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("modelcache"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found |= submodules or {node.module}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("modelcache")}
    return found


def graph(*, type_hints: bool = False) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    names = set(modules)
    return {
        name: {m for m in imports(path, names, type_hints=type_hints) if m != name} for name, path in modules.items()
    }


def layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 3 and parts[:2] == ["modelcache", "service"] and parts[2] in LAYERS:
        return parts[2]
    return None


def test_service_layers_import_downward_only() -> None:
    wrong = []
    for module, targets in graph().items():
        here = layer(module)
        if here is None:
            continue
        for target in targets:
            there = layer(target)
            if there is not None and LAYERS.index(there) > LAYERS.index(here):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_faults_is_a_leaf() -> None:
    deps = graph()["modelcache.service.faults"]
    assert all(not d.startswith("modelcache.service") for d in deps), deps


def test_no_import_circle_in_the_package() -> None:
    """Type-hint-only imports count too: a circle through them is still a circle."""
    edges = graph(type_hints=True)
    cycles = []

    def visit(node: str, path: list[str], on_path: set[str], done: set[str]) -> None:
        on_path.add(node)
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt in on_path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, path, on_path, done)
        on_path.discard(node)
        path.pop()
        done.add(node)

    done: set[str] = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [], set(), done)
    assert cycles == []


def test_the_checks_see_the_layers() -> None:
    """The graph is not empty: the routes use the serving layer, which uses the models."""
    edges = graph()
    assert "modelcache.service.serving.handle" in edges["modelcache.service.http.state"]
    assert "modelcache.service.models.lifecycle" in edges["modelcache.service.serving.runner"]
