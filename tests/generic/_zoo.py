"""Tiny float64 instances of every supported architecture (a few hundred parameters), for
brute-force references.  Each builder: ``(seed) -> (model, x)`` with ``x`` a batch of 3 inputs.
The larger families live in :mod:`weakcorr.zoo` (what the README and benchmarks use)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weakcorr import zoo

DT = torch.float64
B = 3


def _x(*shape: int, seed: int) -> Tensor:
    return torch.randn(B, *shape, generator=torch.Generator().manual_seed(100 + seed), dtype=DT)


class SdpaBlock(nn.Module):
    """A hand-written attention layer on F.scaled_dot_product_attention (non-causal, 2 heads)."""

    def __init__(self, d_in: int = 4, width: int = 8, d_out: int = 2) -> None:
        super().__init__()
        self.inp, self.qkv = nn.Linear(d_in, width), nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, d_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        q, k, v = (t.unflatten(-1, (2, -1)).transpose(-3, -2) for t in self.qkv(h).chunk(3, -1))
        a = F.scaled_dot_product_attention(q, k, v).transpose(-3, -2).flatten(-2)
        return self.out(torch.tanh(h + a).mean(-2))


class TiedMLP(nn.Module):
    """x → tanh(W x) → tanh(W' ·) → Wᵀ-like: the first Linear's weight reused (tied) at the end."""

    def __init__(self, d: int = 3, hidden: int = 4) -> None:
        super().__init__()
        self.first, self.mid = nn.Linear(d, hidden), nn.Linear(hidden, hidden)
        self.last = nn.Linear(hidden, d, bias=False)
        self.last.weight = nn.Parameter(self.first.weight.detach().T.clone())
        self.up = nn.Linear(hidden, hidden, bias=False)
        self.down = nn.Linear(hidden, hidden, bias=False)
        self.down.weight = self.up.weight  # tied: one Parameter used twice

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.first(x))
        h = torch.tanh(self.down(torch.tanh(self.up(self.mid(h)))))
        return self.last(h)


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(seed)
    return build().to(DT)


ARCHITECTURES: dict[str, Callable[[int], tuple[nn.Module, Tensor]]] = {
    "cnn": lambda s: (zoo.cnn(3, s, image_size=4, d_out=2, dtype=DT), _x(1, 4, 4, seed=s)),
    "resnet_group": lambda s: (zoo.resnet(4, s, blocks=1, norm="group", d_out=2, dtype=DT),
                               _x(1, 3, 3, seed=s)),
    "resnet_layer": lambda s: (zoo.resnet(2, s, blocks=1, norm="layer", d_out=2, dtype=DT),
                               _x(1, 3, 3, seed=s)),
    "resnet_batch_eval": lambda s: (zoo.resnet(2, s, blocks=1, norm="batch", d_out=2, dtype=DT),
                                    _x(1, 3, 3, seed=s)),
    "transformer_eval": lambda s: (zoo.transformer(4, s, d_in=3, seq_len=3, d_out=2,
                                                   dtype=DT).eval(), _x(3, 3, seed=s)),
    "transformer_train": lambda s: (zoo.transformer(4, s, d_in=3, seq_len=3, d_out=2,
                                                    dtype=DT), _x(3, 3, seed=s)),
    "vit_scalar": lambda s: (zoo.vit(4, s, image_size=4, patch=2, d_out=None, dtype=DT).eval(),
                             _x(1, 4, 4, seed=s)),
    "sdpa": lambda s: (_seeded(s, lambda: SdpaBlock(3, 4, 2)), _x(3, 3, seed=s)),
    "embedding_tied": lambda s: (zoo.embedding_seq(4, s, vocab=3, seq_len=3, dtype=DT),
                                 torch.randint(0, 3, (B, 3), generator=torch.Generator()
                                               .manual_seed(s))),
    "tied_mlp": lambda s: (_seeded(s, lambda: TiedMLP(3, 3)), _x(3, seed=s)),
}
"""Name → builder; every entry point is tested on each (tests/generic/test_architectures.py)."""
