"""The package's imports point down the layers (ARCHITECTURE.md), and no module imports itself
back through others. Read from the source with ``ast``, every import counted (also those inside
functions), so a lazy import cannot hide an upward arrow."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ckdlab"

# layer -> the layers it must never import
FORBIDDEN = {
    "data": {"models", "objectives", "engine", "workspace", "profiles", "results", "studies", "viz", "widgets", "api", "cli", "reproduce", "report"},
    "models": {"objectives", "engine", "workspace", "profiles", "results", "studies", "viz", "widgets", "api", "cli", "reproduce", "report"},
    "objectives": {"engine", "workspace", "profiles", "results", "studies", "viz", "widgets", "api", "cli", "reproduce", "report"},
    "engine": {"workspace", "profiles", "results", "studies", "viz", "widgets", "api", "cli", "reproduce", "report"},
    "profiles": {"workspace", "results", "studies", "viz", "widgets", "api", "cli", "reproduce", "report"},
    "workspace": {"results", "studies", "viz", "widgets", "api", "cli", "reproduce", "report"},
    "results": {"engine", "workspace", "studies", "viz", "widgets", "api", "cli", "reproduce", "report"},
    "viz": {"engine", "workspace", "studies", "widgets", "api", "cli", "reproduce", "report"},
    "widgets": {"workspace", "studies", "api", "cli", "reproduce", "report"},
    "studies": {"widgets", "api", "cli", "reproduce", "report"},
    "api": {"cli", "reproduce", "report", "widgets"},
    "report": {"studies", "api", "cli", "reproduce", "widgets"},
    "logs": {"data", "models", "objectives", "engine", "workspace", "profiles", "results", "studies", "viz", "widgets", "api",
             "cli", "reproduce", "report"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ckdlab"


def imports_of(path: Path) -> set[str]:
    """Every ckdlab module ``path`` imports (``from ckdlab.x import y`` counts ``ckdlab.x`` and,
    when ``y`` is a submodule, ``ckdlab.x.y``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found: set[str] = set()
    # Imports under ``if TYPE_CHECKING:`` are annotations only and never run.
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
                   for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("ckdlab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("ckdlab"):
                found.add(target)
                found |= {f"{target}.{alias.name}" for alias in node.names if (PACKAGE.parent / f"{target}.{alias.name}".replace(".", "/")).exists()
                          or (PACKAGE.parent / (f"{target}.{alias.name}".replace(".", "/") + ".py")).exists()}
    return found


GRAPH = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def test_graph_was_read():
    assert "ckdlab.studies.distillation" in GRAPH and "ckdlab.engine" in GRAPH["ckdlab.studies.distillation"]
    assert "ckdlab.models.capture" in GRAPH["ckdlab.models.outputs"]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_down(layer):
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items() if layer_of(module) == layer
        for target in targets if layer_of(target) in FORBIDDEN[layer]
    )
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    # Package __init__ files only re-export their own modules; an arrow into a package means its modules.
    def edges(module: str) -> set[str]:
        out = set()
        for target in GRAPH.get(module, ()):
            if target in GRAPH and target != module and not module.startswith(target + "."):
                out.add(target)
        return out

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in edges(module):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, " -> ".join(cycle)


def test_no_module_is_over_the_ceiling():
    sizes = {module: len(path.read_text(encoding="utf-8").splitlines()) for module, path in
             ((module_name(p), p) for p in PACKAGE.rglob("*.py"))}
    assert not {m: n for m, n in sizes.items() if n > 500}, sizes
