"""Import guard: no import cycle inside ``src/rpbt``, and the rooms only import downwards.

Static, from the AST of every module (no module is imported): every ``import`` / ``from ... import`` counts, also
lazy ones inside functions and ``TYPE_CHECKING`` blocks, because a lazy import is still a dependency.
``from rpbt.a import b`` depends on ``rpbt.a`` and, when that is a module, on ``rpbt.a.b``; a module's import of
its own parent package (``from rpbt.pbt.backends import x`` inside ``rpbt.pbt.backends.local``) is not an edge,
nor is ``rpbt`` itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "rpbt"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in sorted((SRC / PKG).rglob("*.py")):
        name = ".".join(f.relative_to(SRC).with_suffix("").parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        mods[name] = f
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ``rpbt`` that ``name`` (a dotted module or module.attribute) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """Modules of ``rpbt`` that ``module`` imports anywhere in its source (lazy imports included)."""
    f = MODULES[module]
    is_pkg = f.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts[: len(parts) - node.level + (1 if is_pkg else 0)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            if t != PKG and not t.startswith(PKG + "."):
                continue
            r = _resolve(t)
            if r and r != module and r != PKG and not module.startswith(r + "."):
                out.add(r)
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))
    return comps


def _in(module: str, rooms: tuple[str, ...]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in rooms)


def test_the_graph_sees_lazy_and_relative_imports():
    """The guard itself: a lazy import inside a function is an edge, ``from pkg import module`` names the module."""
    assert "rpbt.agent.adversary" in GRAPH["rpbt.agent.ppo"]  # lazy, inside RecurrentPPO.__init__
    assert "rpbt.pbt.backends.local" in GRAPH["rpbt.pbt.backends"]  # lazy, inside make_backend
    assert "rpbt.evaluation.policy" in GRAPH["rpbt.pbt.backends.shard"]  # lazy, inside Shard.evaluate_members
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c"]]


def test_no_import_cycle_in_rpbt():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


UPPER_ROOMS = ("rpbt.pbt", "rpbt.run", "rpbt.evaluation", "rpbt.studies", "rpbt.report", "rpbt.cli", "rpbt.api")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, ("rpbt.agent",))))
def test_agent_imports_nothing_above_it(module):
    bad = sorted(t for t in GRAPH[module] if _in(t, UPPER_ROOMS))
    assert not bad, f"{module} imports {bad}: rpbt.agent must import nothing above it"


@pytest.mark.parametrize("module", ["rpbt.checkpoint", "rpbt.seeding"])
def test_leaf_modules_import_only_each_other_and_config(module):
    allowed = {"rpbt.checkpoint", "rpbt.seeding", "rpbt.config"}
    bad = sorted(GRAPH[module] - allowed)
    assert not bad, f"{module} imports {bad}: it may import only rpbt.checkpoint, rpbt.seeding and rpbt.config"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, ("rpbt.config",))))
def test_config_is_a_leaf(module):
    bad = sorted(t for t in GRAPH[module] if not _in(t, ("rpbt.config",)))
    assert not bad, f"{module} imports {bad}: rpbt.config imports nothing of rpbt outside itself"
