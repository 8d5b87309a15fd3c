"""weakcorr: how fast, and why, a network's training becomes linear in its parameters.

Exact derivative correlations C^{D,d} (paper Eq. 10-13), empirical NTKs, networks
trained beside their linearization, width sweeps and power-law fits.

``import weakcorr`` loads only torch and numpy; submodules that need pandas,
matplotlib or a cluster client are imported on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import functional as functional  # a callable module: wc.functional(model)
from .functional import FunctionalModel as FunctionalModel

__version__ = "0.1.0"

# Submodules, loaded on first access (``weakcorr.models``, ``weakcorr.correlations``, ...).
_SUBMODULES = frozenset(
    {
        "analysis",
        "asymptotics",
        "config",
        "correlations",
        "data",
        "experiments",
        "functional",
        "limits",
        "linearize",
        "models",
        "ntk",
        "plots",
        "report",
        "results",
        "sweep",
        "tensornorm",
        "train",
        "zoo",
    }
)

__all__ = ["FunctionalModel", "__version__", "diagnose", "functional", *sorted(_SUBMODULES)]


def __getattr__(name: str) -> Any:
    if name == "diagnose":  # the function: wc.diagnose(make_model, data, widths=..., ...)
        return importlib.import_module("._diagnose", __name__).diagnose
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'weakcorr' has no attribute {name!r}")
