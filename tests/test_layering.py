"""Imports flow one way and never in a circle; `import weakcorr` stays light.

The layers, lowest first (a module may import from its own layer or those below it):

    0  the package's __init__ (the public facade; it imports from every layer)
    1  foundations: functional (f(params, x)), _mlp (the one MLP recogniser and activation
       table), _memory, _files, _precision, _ops, _checks, _inputs, ...
    2  mathematics: correlations, ntk, linearize, tensornorm, asymptotics, fits and their
       private halves
    3  training: train, _train, _vmap_train
    4  models and data: models, zoo, limits, data, _idx
    5  experiments and configs: config, experiments, presets, _a1, _corr_experiment
    6  running sweeps: sweep, results, _claims, _executors, _dryrun
    7  analysis and reports: analysis, plots, report, _diagnose, _a1_report, _a1_plots
    8  the command line: cli, _commands, __main__

Every import counts, module-level or inside a function (a function-level import is still a
dependency, and a circle through one still means neither module can be read or tested without
the other). `import weakcorr` loads no matplotlib, pandas, mlxtend, dask or sklearn (torch
itself imports tqdm).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "src" / "weakcorr"

# Layer of every module (package-relative dotted name, first component).  A new module must be
# registered here: that is the point of the test.
LAYERS: dict[str, int] = {
    "__init__": 0, "_memory": 1, "_files": 1, "_precision": 1, "_ops": 1, "_checks": 1, "functional": 1,
    "_factory": 1, "_torchdata": 1, "_inputs": 1, "_mlp": 1,
    "correlations": 2, "ntk": 2, "linearize": 2, "tensornorm": 2, "asymptotics": 2, "fits": 2,
    "_correlations": 2, "_ntk": 2, "_mlp_taylor": 2, "_spectrum": 2, "_per_layer": 2,
    "train": 3, "_train": 3, "_vmap_train": 3,
    "models": 4, "zoo": 4, "data": 4, "_idx": 4, "limits": 4, "_limits": 4,
    "config": 5, "experiments": 5, "_a1": 5, "presets": 5, "_corr_experiment": 5,
    "sweep": 6, "results": 6, "_claims": 6, "_executors": 6, "_tasks": 6, "_dasksec": 6, "_dryrun": 6,
    "analysis": 7, "plots": 7, "report": 7, "_diagnose": 7, "_a1_report": 7, "_a1_plots": 7,
    "cli": 8, "_commands": 8, "__main__": 8,
}


def _module_name(path: pathlib.Path) -> str:
    """Dotted name relative to the package: ``_mlp._chain``, ``_mlp`` (its __init__), ``train``."""
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "__init__"


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        yield _module_name(path).split(".")[0], path


def _is_module(dotted: str) -> bool:
    target = PKG.joinpath(*dotted.split("."))
    return target.with_suffix(".py").exists() or (target / "__init__.py").exists()


def _imported(path: pathlib.Path):
    """The weakcorr modules ``path`` imports, as dotted names (``__init__`` for the package),
    from every import statement in the file, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    package = list(path.relative_to(PKG).parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module == "weakcorr" or (node.module or "").startswith("weakcorr."):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from . import train`: the module train
                sub = ".".join([*target, alias.name])
                yield sub if _is_module(sub) else (".".join(target) or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("weakcorr."):
                    yield alias.name.split(".", 1)[1]


@pytest.mark.parametrize("name,path", list(_modules()), ids=lambda v: str(v).split("/")[-1])
def test_imports_flow_one_way(name, path):
    assert name in LAYERS, f"register module `{name}` in tests/test_layering.py LAYERS"
    if name == "__init__":
        return
    for dep in _imported(path):
        top = dep.split(".")[0]
        assert top in LAYERS, f"{path.name} imports unknown weakcorr module `{dep}`"
        assert LAYERS[top] <= LAYERS[name], (
            f"{path.relative_to(PKG)} (layer {LAYERS[name]}) imports `{dep}` (layer {LAYERS[top]})"
        )


def _graph() -> dict[str, set[str]]:
    """module → the modules it imports. Imports of the package itself (``from . import
    __version__``) are left out: the facade imports everything, by design."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        name = _module_name(path)
        graph[name] = {d for d in _imported(path) if d not in (name, "__init__")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a
    closed path of imports, for the message."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_closed_path(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One import path from the component's first module back to itself (breadth first)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # unreachable for a component


# Cycles being broken by their owners (remove the entry with the fix: the test then holds them
# to it). Any other cycle fails.
KNOWN_CYCLES: set[frozenset[str]] = set()


def test_no_import_cycles():
    cycles = [c for c in _cycles(_graph()) if frozenset(c) not in KNOWN_CYCLES]
    assert not cycles, "import cycles (function-level imports count): " + "; ".join(
        " -> ".join(c) for c in cycles)


def test_the_cycle_check_can_fail():
    """The checker finds a cycle, and sees a function-level import (as in train.py)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    # train imports _vmap_train inside paired_sgd only: still an import
    assert "_vmap_train" in set(_imported(PKG / "train.py"))


def test_import_is_light():
    code = (
        "import sys, weakcorr, weakcorr.functional;"
        "heavy = [m for m in ('matplotlib', 'pandas', 'mlxtend', 'dask', 'sklearn')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
