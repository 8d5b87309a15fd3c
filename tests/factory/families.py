"""Tiny model families for the factory tests (importable as tests.factory.families)."""

from __future__ import annotations

import torch
from torch import nn


def mlp(width: int, seed: int, d_in: int = 64, d_out: int = 10) -> nn.Module:
    """A seeded two-layer tanh MLP."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, d_out))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / max(1, p.shape[-1]) ** 0.5)
    return net


def unseeded(width: int, d_in: int = 64) -> nn.Module:
    """Seeded by the library (torch.manual_seed inside fork_rng)."""
    return nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, 10))


def cnn(width: int, seed: int, channels: int = 1, classes: int = 10) -> nn.Module:
    """Conv2d -> tanh -> average pooling -> Flatten -> Linear, on [N, C, 8, 8] images."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.Tanh(),
                         nn.AvgPool2d(4), nn.Flatten(), nn.Linear(width * 4, classes))


def scalar(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 1))


def not_a_module(width: int, seed: int):
    return {"width": width}


def three_args(width: int, seed: int, depth: int) -> nn.Module:
    return nn.Linear(width, depth)
