"""Shared fixtures: seeded generators, tiny float64 models, one tolerance table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

# One per-dtype tolerance table (relative, absolute) for comparisons against references.
TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-4, 1e-6)}

# One thread: the tests use tiny tensors, where thread start-up dominates and 2 cores are shared.
torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def tiny_tanh_mlp(d_in: int = 3, hidden: int = 4, d_out: int = 2, *, seed: int = 0,
                  dtype: torch.dtype = torch.float64) -> nn.Module:
    """A 2-hidden-layer tanh MLP with few parameters (for brute-force references)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
        nn.Linear(hidden, d_out),
    )
    return model.to(dtype)


@pytest.fixture
def tiny_model() -> nn.Module:
    return tiny_tanh_mlp()
