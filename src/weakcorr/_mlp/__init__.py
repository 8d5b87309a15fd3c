"""The only code that knows an MLP's structure: the recogniser and the activation table.

* :func:`recognise` (:mod:`._chain`) — a module as a chain of affine layers and elementwise
  maps, or the reason it is not one; :func:`training_layers` — the layered form the
  hand-written training passes take;
* :mod:`._activations` — φ, φ′ in closed form for the named activations, higher derivatives
  and the fallback by jvp.

Consumers: the structured NTK (:mod:`weakcorr._ntk`), the Taylor-mode correlations
(:mod:`weakcorr._mlp_taylor`), the training passes (:mod:`weakcorr._train`,
:mod:`weakcorr._vmap_train`) and :mod:`weakcorr.models` (φ itself).
"""

from __future__ import annotations

from ._activations import (
    CLOSED_FORMS,
    ELEMENTWISE,
    PHI,
    derivatives,
    fast_value,
    slope_by_jvp,
    value_and_slope,
)
from ._chain import (
    EXPECTED,
    ActOp,
    Chain,
    Layered,
    LinearOp,
    ScaleOp,
    recognise,
    recognise_fm,
    training_layers,
)

__all__ = [
    "CLOSED_FORMS",
    "ELEMENTWISE",
    "EXPECTED",
    "PHI",
    "ActOp",
    "Chain",
    "Layered",
    "LinearOp",
    "ScaleOp",
    "derivatives",
    "fast_value",
    "recognise",
    "recognise_fm",
    "slope_by_jvp",
    "training_layers",
    "value_and_slope",
]
