"""Imports flow one way (DESIGN.md): a module imports only from its own layer or those before it,
and `import weakcorr` stays light (no matplotlib, pandas, mlxtend, dask; torch itself imports tqdm)."""

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
    "_correlations": 2, "_ntk": 2, "_mlp_taylor": 2,
    "train": 3, "_train": 3, "_vmap_train": 3,
    "models": 4, "zoo": 4, "data": 4, "_idx": 4, "limits": 4, "_limits": 4,
    "config": 5, "experiments": 5, "_a1": 5, "presets": 5, "_corr_experiment": 5,
    "sweep": 6, "results": 6, "_claims": 6, "_executors": 6, "_dryrun": 6,
    "analysis": 7, "plots": 7, "report": 7, "diagnose_": 7, "_diagnose": 7, "_a1_report": 7, "_a1_plots": 7,
    "cli": 8, "_commands": 8, "__main__": 8,
}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        yield rel.parts[0] if rel.parts[0] != "__init__" or len(rel.parts) > 1 else "__init__", path


def _imported(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(PKG).parts) - 1
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(path.relative_to(PKG).parts[:-1])[: depth - (node.level - 1)]
                parts = [*base, *(node.module.split(".") if node.module else [])]
                if parts:
                    yield parts[0]
                else:
                    yield from (a.name if a.name in LAYERS else "__init__" for a in node.names)
            elif node.module and node.module.startswith("weakcorr."):
                yield node.module.split(".")[1]
            elif node.module == "weakcorr":
                yield from (a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("weakcorr."):
                    yield a.name.split(".")[1]


@pytest.mark.parametrize("name,path", list(_modules()), ids=lambda v: str(v).split("/")[-1])
def test_imports_flow_one_way(name, path):
    assert name in LAYERS, f"register module `{name}` in tests/test_layering.py LAYERS"
    if name == "__init__":
        return
    for dep in _imported(path):
        assert dep in LAYERS, f"{path.name} imports unknown weakcorr module `{dep}`"
        assert LAYERS[dep] <= LAYERS[name], (
            f"{path.relative_to(PKG)} (layer {LAYERS[name]}) imports `{dep}` (layer {LAYERS[dep]})"
        )


def test_import_is_light():
    code = (
        "import sys, weakcorr, weakcorr.functional;"
        "heavy = [m for m in ('matplotlib', 'pandas', 'mlxtend', 'dask', 'sklearn')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
