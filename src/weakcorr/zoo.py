"""Small model families beyond the MLP: ``make_model(width, seed) -> nn.Module`` builders.

Each builder returns a freshly initialised module (PyTorch's default initialisation, drawn from
``seed`` without touching the global random state), in training mode but without any random or
batch-dependent layer, so every weakcorr entry point takes it as is.  ``width`` is the number
of channels (CNNs) or the model dimension (transformers); everything else is keyword-only.
``d_out=None`` makes the model return one scalar per input, [B] (d_y = 1).

==================  =====================================  ==============================
builder             input                                   made of
==================  =====================================  ==============================
:func:`cnn`         images [B, C, H, W]                     Conv2d, GELU, MaxPool2d,
                                                            AvgPool2d, Flatten, Linear
:func:`resnet`      images [B, C, H, W]                     Conv2d stem, pre-norm residual
                                                            blocks (GroupNorm / LayerNorm-
                                                            style GroupNorm(1) / eval
                                                            BatchNorm), global average pool
:func:`transformer` sequences [B, L, d_in]                  Linear embedding, positional
                                                            embedding, nn.TransformerEncoder
                                                            (nn.MultiheadAttention, SDPA),
                                                            mean pool, Linear
:func:`vit`         images [B, C, H, W]                     patch Conv2d + :func:`transformer`
:func:`embedding_seq` token ids [B, L] (int64)             nn.Embedding, causal
                                                            F.scaled_dot_product_attention,
                                                            LayerNorm, output tied to the
                                                            embedding (``tied=True``)
==================  =====================================  ==============================

Example:
    >>> import torch, weakcorr as wc
    >>> from weakcorr import zoo
    >>> model = zoo.cnn(8, seed=0, image_size=8, d_out=3)
    >>> wc.functional(model)(dict(model.named_parameters()), torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FAMILIES", "cnn", "embedding_seq", "resnet", "transformer", "vit"]


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_d_out(d_out: object) -> int | None:
    return None if d_out is None else _check_int(d_out, "d_out", 1)


def _seeded(seed: object, build: Callable[[], nn.Module], dtype: torch.dtype) -> nn.Module:
    seed = _check_int(seed, "seed", 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    return model.to(dtype)


class _Head(nn.Module):
    """Linear(d, d_out) or, with d_out None, Linear(d, 1) squeezed to [B]."""

    def __init__(self, d: int, d_out: int | None) -> None:
        super().__init__()
        self.scalar = d_out is None
        self.linear = nn.Linear(d, 1 if d_out is None else d_out)

    def forward(self, h: Tensor) -> Tensor:
        out = self.linear(h)
        return out.squeeze(-1) if self.scalar else out


def cnn(
    width: int,
    seed: int = 0,
    *,
    in_channels: int = 1,
    image_size: int = 28,
    d_out: int | None = 10,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Conv(3×3, ``width``)-GELU-MaxPool(2)-Conv(3×3, ``width``)-GELU-AvgPool(2)-Flatten-Linear.

    Args:
        width: channels of both convolutions.
        seed: initialisation seed.
        in_channels, image_size: the input images [B, in_channels, image_size, image_size]
            (``image_size`` divisible by 4).
        d_out: outputs (None: one scalar per input).
        dtype: parameter dtype.

    Returns:
        ``nn.Sequential``; about 9·width² + 10·width·(image_size/4)² parameters.
    """
    width = _check_int(width, "width", 1)
    image_size = _check_int(image_size, "image_size", 4)
    if image_size % 4:
        raise ValueError(f"`image_size` must be divisible by 4 (two 2×2 pools), got {image_size}.")
    in_channels, d_out = _check_int(in_channels, "in_channels", 1), _check_d_out(d_out)
    side = image_size // 4
    return _seeded(seed, lambda: nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.AvgPool2d(2),
        nn.Flatten(), _Head(width * side * side, d_out),
    ), dtype)


def _norm2d(kind: str, width: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(width, 4), width)
    if kind == "layer":
        return nn.GroupNorm(1, width)  # LayerNorm over (C, H, W)
    bn = nn.BatchNorm2d(width)
    return bn.eval()


class ResidualBlock(nn.Module):
    """x + Conv(GELU(Norm(Conv(GELU(Norm(x)))))), pre-norm, 3×3 convolutions."""

    def __init__(self, width: int, norm: str) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm2d(norm, width), nn.Conv2d(width, width, 3, padding=1)
        self.norm2, self.conv2 = _norm2d(norm, width), nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.gelu(self.norm1(x)))
        return x + self.conv2(F.gelu(self.norm2(h)))


class _ResNet(nn.Module):
    def __init__(self, width: int, in_channels: int, blocks: int, norm: str,
                 d_out: int | None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(width, norm) for _ in range(blocks)])
        self.norm = _norm2d(norm, width)
        self.head = _Head(width, d_out)

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.norm(self.blocks(self.stem(x))))
        return self.head(h.mean(dim=(-2, -1)))

    def train(self, mode: bool = True) -> _ResNet:
        super().train(mode)
        for m in self.modules():  # BatchNorm stays in eval mode (running statistics)
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self


NORMS = ("group", "layer", "batch")


def resnet(
    width: int,
    seed: int = 0,
    *,
    in_channels: int = 1,
    blocks: int = 2,
    norm: str = "group",
    d_out: int | None = 10,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A ResNet-style family: stem Conv, ``blocks`` pre-norm residual blocks, pool, Linear.

    Args:
        width: channels.
        seed: initialisation seed.
        in_channels: input channels (images [B, C, H, W] of any size).
        blocks: residual blocks (>= 1).
        norm: ``"group"`` (GroupNorm with gcd(width, 4) groups), ``"layer"`` (GroupNorm(1),
            LayerNorm over channels and pixels) or ``"batch"`` (BatchNorm2d kept in eval mode:
            running statistics, buffers never updated by weakcorr).
        d_out: outputs (None: one scalar per input).
        dtype: parameter dtype.
    """
    if norm not in NORMS:
        raise ValueError(f"`norm` must be one of {list(NORMS)}, got {norm!r}.")
    width, blocks = _check_int(width, "width", 1), _check_int(blocks, "blocks", 1)
    in_channels, d_out = _check_int(in_channels, "in_channels", 1), _check_d_out(d_out)
    return _seeded(seed, lambda: _ResNet(width, in_channels, blocks, norm, d_out), dtype)


class _Transformer(nn.Module):
    def __init__(self, width: int, d_in: int, seq_len: int, heads: int, layers: int,
                 d_out: int | None) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, width)
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = _Head(width, d_out)

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder(self.embed(x) + self.pos[: x.shape[-2]])
        return self.head(self.norm(h).mean(dim=-2))


def _check_heads(width: int, heads: object) -> int:
    heads = _check_int(heads, "heads", 1)
    if width % heads:
        raise ValueError(f"`width` ({width}) must be divisible by `heads` ({heads}).")
    return heads


def transformer(
    width: int,
    seed: int = 0,
    *,
    d_in: int = 8,
    seq_len: int = 8,
    heads: int = 2,
    layers: int = 1,
    d_out: int | None = 10,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A transformer-encoder family on float sequences [B, L, d_in] (L <= ``seq_len``).

    Linear embedding + learned positions, ``layers`` pre-norm ``nn.TransformerEncoderLayer``
    (``width`` model dimension, ``heads`` heads, feed-forward 2·width, GELU, no dropout),
    LayerNorm, mean over positions, Linear.
    """
    width = _check_int(width, "width", 1)
    heads = _check_heads(width, heads)
    d_in, seq_len = _check_int(d_in, "d_in", 1), _check_int(seq_len, "seq_len", 1)
    layers, d_out = _check_int(layers, "layers", 1), _check_d_out(d_out)
    return _seeded(seed, lambda: _Transformer(width, d_in, seq_len, heads, layers, d_out), dtype)


class _ViT(nn.Module):
    def __init__(self, width: int, in_channels: int, image_size: int, patch: int, heads: int,
                 layers: int, d_out: int | None) -> None:
        super().__init__()
        self.patch = nn.Conv2d(in_channels, width, patch, stride=patch)
        self.body = _Transformer(width, width, (image_size // patch) ** 2, heads, layers, d_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.patch(x).flatten(-2).transpose(-1, -2))


def vit(
    width: int,
    seed: int = 0,
    *,
    in_channels: int = 1,
    image_size: int = 28,
    patch: int = 7,
    heads: int = 2,
    layers: int = 1,
    d_out: int | None = 10,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A small vision transformer: patch Conv2d(stride ``patch``), then :func:`transformer`."""
    width = _check_int(width, "width", 1)
    heads = _check_heads(width, heads)
    image_size, patch = _check_int(image_size, "image_size", 1), _check_int(patch, "patch", 1)
    if image_size % patch:
        raise ValueError(f"`image_size` ({image_size}) must be divisible by `patch` ({patch}).")
    in_channels, layers = _check_int(in_channels, "in_channels", 1), _check_int(layers, "layers", 1)
    d_out = _check_d_out(d_out)
    return _seeded(seed, lambda: _ViT(width, in_channels, image_size, patch, heads, layers,
                                      d_out), dtype)


class _EmbeddingSeq(nn.Module):
    def __init__(self, width: int, vocab: int, seq_len: int, tied: bool,
                 d_out: int | None) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, width))
        self.qkv = nn.Linear(width, 3 * width)
        self.norm = nn.LayerNorm(width)
        if tied:  # next-token logits through the embedding matrix: one shared Parameter
            self.head = nn.Linear(width, vocab, bias=False)
            self.head.weight = self.embed.weight
        else:
            self.head = _Head(width, d_out)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens) + self.pos[: tokens.shape[-1]]
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        h = h + F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(self.norm(h)[..., -1, :])


def embedding_seq(
    width: int,
    seed: int = 0,
    *,
    vocab: int = 16,
    seq_len: int = 8,
    tied: bool = True,
    d_out: int | None = 10,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Token ids [B, L] (int64, L <= ``seq_len``) → embedding, one causal attention layer
    (``F.scaled_dot_product_attention``), LayerNorm, last position.

    With ``tied=True`` (default) the output is the next-token logits ``h · Eᵀ`` with the
    embedding matrix E (d_y = ``vocab``, tied weights, ``d_out`` ignored); else a Linear head.
    """
    width, vocab = _check_int(width, "width", 1), _check_int(vocab, "vocab", 2)
    seq_len, d_out = _check_int(seq_len, "seq_len", 1), _check_d_out(d_out)
    if not isinstance(tied, bool):
        raise ValueError(f"`tied` must be True or False, got {tied!r}.")
    return _seeded(seed, lambda: _EmbeddingSeq(width, vocab, seq_len, tied, d_out), dtype)


FAMILIES: dict[str, Callable[..., nn.Module]] = {
    "cnn": cnn, "resnet": resnet, "transformer": transformer, "vit": vit,
    "embedding_seq": embedding_seq,
}
"""Name → builder, for ``--model weakcorr.zoo:NAME`` style lookups."""
