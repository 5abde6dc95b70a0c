"""The package's structure: no import cycles at any granularity, and the import contracts cover every module."""

from __future__ import annotations

import configparser
from pathlib import Path

import grimp

import fedge

ROOT = Path(__file__).resolve().parents[1]


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("fedge", include_external_packages=False, exclude_type_checking_imports=True)


def test_no_module_imports_itself_through_others() -> None:
    """Strongly connected components of the module import graph (Tarjan) are single modules."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert cycles == []


def test_core_contract_forbids_every_other_top_level_module() -> None:
    """A module added next to fedge.core is forbidden to it too (the contract cannot silently go stale)."""
    contracts = configparser.ConfigParser()
    contracts.read(ROOT / ".importlinter")
    forbidden = set(contracts["importlinter:contract:core-is-pure"]["forbidden_modules"].split())
    package = Path(fedge.__file__).parent
    top_level = {f"fedge.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    top_level |= {f"fedge.{p.name}" for p in package.iterdir() if (p / "__init__.py").exists()}
    assert forbidden == top_level - {"fedge.core"}
