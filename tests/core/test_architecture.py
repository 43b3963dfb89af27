"""The package's import graph: layers, no cycles, no private names across modules.

Layers, each importing only from layers below it (or its own):

1. public modules (``kernels``, ``functional``, ``layout``, ``gram``, ``models``, ``botorch``,
   ``mlls``, ``demo``, the deprecated ``fused`` alias, ``__init__``);
2. ``_validation`` (input checks at the public boundary);
3. ``_core.engines`` (the engines and the one dispatcher);
4. ``_core`` math (``config``, ``duals``, ``lanes``, ``recursion``, ``autodiff``).

Imports inside functions count too (they hid cycles before).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gpytorch_rntk"
NAME = "gpytorch_rntk"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for every import of a package module in ``path`` (relative imports
    resolved; ``names`` empty for ``import x``)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == NAME]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != NAME:
                continue
            names = [a.name for a in node.names]
            # ``from . import x`` imports the module x
            submodules = [n for n in names if _is_module(f"{target}.{n}")]
            found += [(f"{target}.{n}", []) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest:
                found.append((target, rest))
    return found


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or path.is_dir()


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: _imports(p) for m, p in MODULES.items()}


def _layer(module: str) -> int:
    if module.startswith(f"{NAME}._core.engines"):
        return 3
    if module.startswith(f"{NAME}._core"):
        return 4
    if module == f"{NAME}._validation":
        return 2
    return 1


def test_the_graph_is_read():
    """The check sees the package's real imports (so that the tests below cannot pass on an
    empty graph)."""
    assert f"{NAME}._core.engines.tensor" in MODULES
    assert (
        f"{NAME}._core.config",
        [
            "GEOMETRIC",
            "LAST",
            "MEAN",
            "InitialState",
            "RecurrentConfig",
            "RecurrentVariances",
        ],
    ) in GRAPH[f"{NAME}._core.engines.tensor"]
    assert any(
        t == f"{NAME}._core.engines.triton_kernels" for t, _ in GRAPH[f"{NAME}._core.engines.fused"]
    )  # a function-level import


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    for target, _ in GRAPH[module]:
        assert _layer(target) >= _layer(module), f"{module} imports {target} from a layer above"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_across_modules(module):
    for target, names in GRAPH[module]:
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        assert not private, f"{module} imports private names {private} from {target}"


def test_no_cycles():
    edges = {m: {t for t, _ in GRAPH[m] if t in MODULES and t != m} for m in MODULES}
    # a package's __init__ re-exporting its submodules is no cycle of theirs
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in edges[m]:
            if state.get(t) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path[path.index(t) :] + [t])}")
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])
