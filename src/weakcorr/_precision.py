"""Full float32 precision on CUDA: TF32 off for every matmul and convolution while training.

TF32 keeps 10 mantissa bits (relative rounding ~5e-4); the differences f − f_lin that the
paper's Fig. 4 measures reach MSE_test ~1e-12 at width 1024 (relative to outputs of order 1,
~1e-6), far below that rounding. PyTorch's defaults already keep CUDA matmuls in full float32,
but cuDNN convolutions default to TF32 (``torch.backends.cudnn.allow_tf32 = True``) and any
user code may switch matmuls to it (``torch.set_float32_matmul_precision("high")``). So the
training entry points run inside :func:`full_precision`, which turns TF32 off, checks that it is
off, and restores the caller's settings afterwards.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["full_precision", "tf32_state", "trains_in_full_precision"]

F = TypeVar("F", bound=Callable[..., Any])


def tf32_state() -> dict[str, object]:
    """The settings that decide whether CUDA rounds float32 products to TF32."""
    return {
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


@contextlib.contextmanager
def full_precision(device: torch.device | str | None) -> Iterator[None]:
    """Run the block with TF32 off on CUDA (a no-op elsewhere); the caller's settings return after.

    Raises:
        RuntimeError: if TF32 is still on after switching it off (an override from outside
            PyTorch's flags), before any work.
    """
    if device is None or torch.device(device).type != "cuda":
        yield
        return
    before = tf32_state()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        now = tf32_state()
        if now != {"matmul_allow_tf32": False, "cudnn_allow_tf32": False,
                   "float32_matmul_precision": "highest"}:
            raise RuntimeError(f"TF32 could not be switched off for training on {device}: {now}; "
                               "f − f_lin is far below TF32's rounding, so weakcorr refuses to train")
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before["matmul_allow_tf32"]
        torch.backends.cudnn.allow_tf32 = before["cudnn_allow_tf32"]
        torch.set_float32_matmul_precision(str(before["float32_matmul_precision"]))


def _model_device(models: Any) -> torch.device | None:
    model = models[0] if isinstance(models, (list, tuple)) and models else models
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return None


def trains_in_full_precision(fn: F) -> F:
    """Decorate a training entry point ``fn(model_or_models, data, *, device=None, ...)``: it runs
    inside :func:`full_precision` for its ``device`` (default: the model's)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device = kwargs.get("device")
        if device is None and args:
            device = _model_device(args[0])
        with full_precision(device):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
