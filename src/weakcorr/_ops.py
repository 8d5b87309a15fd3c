"""Exact decompositions of the ops whose higher-order forward derivatives PyTorch gets wrong.

Nested forward mode (``torch.func.jvp`` of ``torch.func.jvp``), the core of every correlation
(paper Eq. 13), relies on each op's forward-derivative formula being itself differentiable in
forward mode.  For some native kernels it is not: in torch 2.13, jvp-of-jvp through
``native_layer_norm`` is off by tens of percent (a Linear-LayerNorm-Linear model in float64:
the second derivative along a random direction comes out -89.4 where reverse-over-reverse
gives -50.2), and ``instance_norm`` (which runs ``batch_norm`` in training mode inside) by
~5 %; upstream tracks the class (pytorch/pytorch#196700, #196699, #198017).  Attention has a
second problem: the fused kernels (flash / efficient SDPA on CPU, the eval-mode
``_native_multi_head_attention`` and ``_transformer_encoder_layer_fwd`` fast paths) have no
forward-mode derivative at all.

:func:`exact_ops` is the context every :class:`weakcorr.functional.FunctionalModel` call runs
in.  Inside it:

* ``F.layer_norm``, ``F.group_norm``, ``F.rms_norm``, ``F.instance_norm`` and ``F.batch_norm``
  with running statistics (eval mode), and their ``torch.*`` spellings, are computed from
  primitive ops (mean, subtraction, multiplication, ``rsqrt``), whose derivatives of every
  order are exact (``torch.ops.aten.*`` calls are not intercepted: the derivative self-check
  catches those);
* ``F.scaled_dot_product_attention`` is ``softmax(q kᵀ · scale + mask) v`` written out (the
  math backend's formula), and ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`` is active
  for any call that reaches the dispatcher directly;
* ``F.logsigmoid`` is min(x, 0) − log1p(exp(−|x|)) (its native backward misbehaves under
  nested ``vmap``);
* the fused transformer fast path is off (``torch.backends.mha.set_fastpath_enabled(False)``),
  so ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` in eval mode take the
  composite path.

Forward values equal PyTorch's to rounding (tested); the running statistics of batch norm are
read, never updated.  ``F.batch_norm`` in training mode (batch statistics) is left to PyTorch:
the library refuses such modules before any work (:mod:`weakcorr._checks`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

__all__ = [
    "DECOMPOSED",
    "batch_norm",
    "exact_ops",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "logsigmoid",
    "rms_norm",
    "scaled_dot_product_attention",
]


def _normalize(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=dims, keepdim=True)
    return centred * torch.rsqrt(var + eps)


def _last_dims(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    n = 1 if isinstance(normalized_shape, int) else len(tuple(normalized_shape))
    return tuple(range(-n, 0))


def layer_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """``F.layer_norm`` from primitive ops: (x − mean) / sqrt(var + eps) · weight + bias."""
    out = _normalize(input, _last_dims(normalized_shape), eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def rms_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    eps: float | None = None,
) -> Tensor:
    """``F.rms_norm`` from primitive ops: x / sqrt(mean(x²) + eps) · weight."""
    eps = torch.finfo(input.dtype).eps if eps is None else eps
    dims = _last_dims(normalized_shape)
    out = input * torch.rsqrt((input * input).mean(dim=dims, keepdim=True) + eps)
    return out * weight if weight is not None else out


def _channel_affine(out: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    shape = (1, -1) + (1,) * (out.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """``F.group_norm`` from primitive ops: statistics over each group of channels [N, C, *]."""
    grouped = input.reshape(input.shape[0], num_groups, -1)
    out = _normalize(grouped, (-1,), eps).reshape(input.shape)
    return _channel_affine(out, weight, bias)


def _running_stats_norm(
    input: Tensor, mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None,
    eps: float,
) -> Tensor:
    shape = (1, -1) + (1,) * (input.ndim - 2)
    out = (input - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + eps)
    return _channel_affine(out, weight, bias)


_native_batch_norm = F.batch_norm
_native_instance_norm = F.instance_norm


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """``F.batch_norm``: eval mode (running statistics) from primitive ops; buffers untouched.

    Training mode (batch statistics) is passed to PyTorch unchanged.
    """
    if training or running_mean is None or running_var is None:
        return _native_batch_norm(input, running_mean, running_var, weight, bias, training,
                                  momentum, eps)
    return _running_stats_norm(input, running_mean, running_var, weight, bias, eps)


def instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """``F.instance_norm`` from primitive ops: statistics over each sample's channel [N, C, *].

    The running statistics (``track_running_stats=True``) are read in eval mode and never
    updated.
    """
    if not use_input_stats:
        if running_mean is None or running_var is None:
            return _native_instance_norm(input, running_mean, running_var, weight, bias,
                                         use_input_stats, momentum, eps)
        return _running_stats_norm(input, running_mean, running_var, weight, bias, eps)
    out = _normalize(input, tuple(range(2, input.ndim)), eps)
    return _channel_affine(out, weight, bias)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """``F.scaled_dot_product_attention`` written out: softmax(q kᵀ · scale + mask) v.

    Raises:
        ValueError: for ``dropout_p > 0`` (random attention weights have no derivative to
            correlate; put the model in eval mode).
    """
    if dropout_p > 0:
        raise ValueError(
            f"scaled_dot_product_attention was called with `dropout_p`={dropout_p}: random "
            "attention weights make every derivative meaningless. Call model.eval() (or pass "
            "dropout_p=0.0 outside training)."
        )
    s = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    scores = (query @ key.transpose(-2, -1)) * s
    n_q, n_k = query.shape[-2], key.shape[-2]
    if is_causal:
        keep = torch.ones(n_q, n_k, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return torch.softmax(scores, dim=-1) @ value


def logsigmoid(input: Tensor) -> Tensor:
    """``F.logsigmoid`` from primitive ops: min(x, 0) − log1p(exp(−|x|)).

    The native kernel's backward reads a buffer saved by the forward that is not batched under
    nested ``vmap`` (the per-input gradients of the correlations), which PyTorch resizes with a
    deprecation warning.
    """
    return torch.clamp(input, max=0) - torch.log1p(torch.exp(-input.abs()))


def _torch_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5,
                      cudnn_enable=True):  # noqa: ANN001, ANN202
    return layer_norm(input, normalized_shape, weight, bias, eps)


def _torch_group_norm(input, num_groups, weight=None, bias=None, eps=1e-5,
                      cudnn_enabled=True):  # noqa: ANN001, ANN202
    return group_norm(input, num_groups, weight, bias, eps)


def _torch_rms_norm(input, normalized_shape, weight=None, eps=None):  # noqa: ANN001, ANN202
    return rms_norm(input, normalized_shape, weight, eps)


def _torch_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps,
                      cudnn_enabled=True):  # noqa: ANN001, ANN202
    return batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _torch_instance_norm(input, weight, bias, running_mean, running_var, use_input_stats,
                         momentum, eps, cudnn_enabled=True):  # noqa: ANN001, ANN202
    return instance_norm(input, running_mean, running_var, weight, bias, use_input_stats,
                         momentum, eps)


DECOMPOSED: dict[Callable[..., Tensor], Callable[..., Tensor]] = {
    F.layer_norm: layer_norm,
    F.group_norm: group_norm,
    F.rms_norm: rms_norm,
    F.batch_norm: batch_norm,
    F.instance_norm: instance_norm,
    F.scaled_dot_product_attention: scaled_dot_product_attention,
    F.logsigmoid: logsigmoid,
    torch.layer_norm: _torch_layer_norm,
    torch.group_norm: _torch_group_norm,
    torch.rms_norm: _torch_rms_norm,
    torch.batch_norm: _torch_batch_norm,
    torch.instance_norm: _torch_instance_norm,
}
"""PyTorch function → its exact decomposition (what :func:`exact_ops` swaps in)."""


class _ExactOpsMode(TorchFunctionMode):
    """Routes the functions of :data:`DECOMPOSED` to their decompositions."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        impl = DECOMPOSED.get(func)
        return (impl or func)(*args, **(kwargs or {}))


@contextlib.contextmanager
def exact_ops() -> Iterator[None]:
    """Run the enclosed calls with exact decompositions, math SDPA and no fused fast path.

    Re-entrant; restores PyTorch's transformer fast-path setting on exit.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH), _ExactOpsMode():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
