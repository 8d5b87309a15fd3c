"""A tiny A.1 config shared by the tests: sklearn digits (64 features), widths 4-16."""

from __future__ import annotations

import copy
from typing import Any

TINY: dict[str, Any] = {
    "name": "tiny",
    "datasets": ["digits"],
    "data": {"n_train": 8, "n_test": 4},
    "model": {"widths": [4, 8, 16], "depths": [1, 2], "activations": ["relu", "erf"]},
    "seeds": 2,
    "correlations": {"norm_tuples": 1, "norm_restarts": 1, "hessian_iters": 5},
    "training": {"steps": 8, "seeds": 1, "eval_every": 1, "log_every": 4},
}


def tiny(**changes: Any) -> dict[str, Any]:
    """A deep copy of TINY with top-level sections updated (dicts merged)."""
    out = copy.deepcopy(TINY)
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out
