"""Data the PyTorch way: :class:`Dataset` and :func:`as_dataset`, which every ``data`` goes through.

``data`` may be a weakcorr :class:`Dataset` (what :func:`weakcorr.data.load` returns), an object
with the six tensors ``X_train, Y_train, labels_train, X_test, Y_test, labels_test``, or a pair
``(train, test)`` whose splits are each a ``torch.utils.data.Dataset`` (``TensorDataset`` or any
map-style or iterable dataset yielding ``(x, y)``), a ``DataLoader`` or an ``(X, Y)`` tuple of
tensors. A pair is materialised in memory once, refused before reading it all when it would hold
more than ``max_bytes`` (:data:`MAX_BYTES` by default). Targets:

* integer class labels [N] become one-hot float targets (the paper's MSE on one-hot labels,
  App. A), the labels kept for accuracies;
* one-hot float targets [N, C] keep their labels (the argmax);
* any other float targets are regression targets: no labels (accuracies are not computed).

>>> X, Y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
>>> ds = as_dataset(((X[:4], Y[:4]), (X[4:], Y[4:])))
>>> ds.Y_train.shape, ds.labels_test.tolist(), ds.n_classes
(torch.Size([4, 3]), [1, 2], 3)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["MAX_BYTES", "Dataset", "as_dataset"]

#: Default bound on the bytes a (train, test) pair may take once materialised (``max_bytes``).
MAX_BYTES = 4 * 2**30

_FORMS = ("a weakcorr Dataset (weakcorr.data.load), or a pair (train, test) whose splits are "
          "torch Datasets (e.g. TensorDataset), DataLoaders or (X, Y) tuples of tensors")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split held in memory.

    Attributes:
        X_train: inputs [n_train, d] (or [n_train, C, H, W] with ``flatten=False``, or any
            per-example shape a model takes, e.g. token ids [n_train, L]).
        Y_train: targets: one-hot [n_train, n_classes] for class data, or regression targets
            ([n_train, d_y] or [n_train]).
        labels_train: int64 labels [n_train] in 0..n_classes-1; None for regression targets.
        X_test, Y_test, labels_test: the same for the test split.
        name: the dataset's name.
        n_classes: number of classes (the output dimension for regression targets).
    """

    X_train: Tensor
    Y_train: Tensor
    labels_train: Tensor | None
    X_test: Tensor
    Y_test: Tensor
    labels_test: Tensor | None
    name: str
    n_classes: int

    def describe(self) -> str:
        """One line: name, sizes, feature shape, classes, value range and dtype."""
        xs = [x for x in (self.X_train, self.X_test) if x.numel()]
        lo = min(x.min().item() for x in xs)
        hi = max(x.max().item() for x in xs)
        kind = f"{self.n_classes} classes" if self.labels_train is not None else (
            f"regression targets {tuple(self.Y_train.shape[1:])}")
        return (
            f"{self.name}: {len(self.X_train)} train / {len(self.X_test)} test, "
            f"features {tuple(self.X_train.shape[1:])}, {kind}, "
            f"values in [{lo:.3g}, {hi:.3g}], {self.X_train.dtype}"
        )


_SIX = ("X_train", "Y_train", "labels_train", "X_test", "Y_test", "labels_test")


def as_dataset(data: Any, *, name: str = "data", max_bytes: int = MAX_BYTES,
               n_classes: int | None = None) -> Any:
    """``data`` as a :class:`Dataset` (see the module docstring), materialised once.

    Args:
        data: a :class:`Dataset`, an object with the six tensors (or with ``X_train, Y_train,
            X_test, Y_test`` only: labels derived as for a pair), or a pair ``(train, test)``.
        name: the argument named in errors.
        max_bytes: refuse a pair that would take more bytes than this in memory.
        n_classes: the number of classes of integer labels (default: the ``classes`` attribute
            of a torchvision-style dataset, else the largest label + 1).

    Returns:
        ``data`` itself when it already has the six tensors (a :class:`Dataset` or alike),
        else a new :class:`Dataset` named ``"torch"``.

    Raises:
        TypeError: ``data`` is none of the accepted forms, naming ``name``.
        ValueError: above ``max_bytes``, splits without targets, mismatched lengths or shapes,
            negative class labels.
    """
    if all(hasattr(data, k) for k in _SIX):
        return data
    if all(hasattr(data, k) for k in ("X_train", "Y_train", "X_test", "Y_test")):  # no labels
        return _assemble(*(torch.as_tensor(getattr(data, k))
                           for k in ("X_train", "Y_train", "X_test", "Y_test")), name, n_classes)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        if all(isinstance(s, Tensor) for s in data):
            raise TypeError(f"`{name}` is a pair of tensors, which reads as (X, Y) without a "
                            f"test split; pass ((X_train, Y_train), (X_test, Y_test))")
        budget = [int(max_bytes)]
        (x_tr, y_tr), (x_te, y_te) = (_split(s, f"{name}[{i}] ({split})", budget, max_bytes,
                                             name)
                                      for i, (s, split) in enumerate(zip(data, ("train", "test"))))
        if n_classes is None:
            found = [getattr(getattr(s, "dataset", s), "classes", None) for s in data]
            n_classes = next((len(c) for c in found if isinstance(c, (list, tuple)) and c), None)
        return _assemble(x_tr, y_tr, x_te, y_te, name, n_classes)
    got = type(data).__name__
    hint = ""
    if isinstance(data, (torch.utils.data.Dataset, torch.utils.data.DataLoader)):
        hint = ("; a single split was given: pass (train, test), e.g. "
                "torch.utils.data.random_split(ds, [0.8, 0.2])")
    raise TypeError(f"`{name}` must be {_FORMS}; got {got}{hint}")


def _nbytes(t: Any) -> int:
    return t.numel() * t.element_size() if isinstance(t, Tensor) else 0


def _too_big(where: str, need: float, max_bytes: int, name: str) -> ValueError:
    return ValueError(f"`{where}` would take ~{need / 2**30:.3g} GiB in memory, above the bound "
                      f"`max_bytes` = {max_bytes / 2**30:.3g} GiB of weakcorr.data.as_dataset "
                      f"(the data is materialised once); pass a subset "
                      f"(torch.utils.data.Subset) or call weakcorr.data.as_dataset({name}, "
                      "max_bytes=...) yourself with a larger bound")


def _pair(item: Any, where: str) -> tuple[Tensor, Tensor]:
    if isinstance(item, dict) or not isinstance(item, (tuple, list)) or len(item) < 2:
        raise ValueError(f"`{where}` must yield (x, y) pairs (inputs and targets), got "
                         f"{type(item).__name__}" + (f" of length {len(item)}"
                                                    if isinstance(item, (tuple, list)) else "")
                         + "; wrap it so each item is (x, y)")
    return torch.as_tensor(item[0]), torch.as_tensor(item[1])


def _split(split: Any, where: str, budget: list[int], max_bytes: int, name: str
           ) -> tuple[Tensor, Tensor]:
    """One split as (X, Y) tensors, refused before reading it all when above the budget."""
    from torch.utils.data import DataLoader, TensorDataset

    def charge(n: float) -> None:
        if n > budget[0]:
            raise _too_big(where, max_bytes - budget[0] + n, max_bytes, name)

    if isinstance(split, (tuple, list)) and len(split) == 2 and all(
            isinstance(t, Tensor) for t in split):
        x, y = split
        charge(_nbytes(x) + _nbytes(y))
    elif isinstance(split, TensorDataset):
        if len(split.tensors) < 2:
            raise ValueError(f"`{where}` is a TensorDataset of {len(split.tensors)} tensor(s); "
                             "it needs (inputs, targets): TensorDataset(X, Y)")
        x, y = split.tensors[0], split.tensors[1]
        charge(_nbytes(x) + _nbytes(y))
    elif isinstance(split, DataLoader):
        x, y = _stack(split, where, charge, length=_len(split), per="batch")
    elif isinstance(split, torch.utils.data.Dataset):
        n = _len(split)
        if n is not None:
            items = (split[i] for i in range(n))  # map-style: indexed in order
        elif isinstance(split, Iterable):
            items = iter(split)
        else:
            raise TypeError(f"`{where}` is a torch Dataset with neither __len__ nor __iter__; "
                            "give it a __len__ (map-style) or make it an IterableDataset")
        x, y = _stack(items, where, charge, length=n, per="item")
    else:
        raise TypeError(f"`{where}` must be a torch Dataset, a DataLoader or an (X, Y) tuple of "
                        f"tensors, got {type(split).__name__}")
    if len(x) != len(y):
        raise ValueError(f"`{where}` has {len(x)} inputs but {len(y)} targets; give one target "
                         "per input")
    budget[0] -= _nbytes(x) + _nbytes(y)
    return x, y


def _len(obj: Any) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


def _stack(items: Iterable[Any], where: str, charge: Any, *, length: int | None, per: str
           ) -> tuple[Tensor, Tensor]:
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    total = 0
    for k, item in enumerate(items):
        x, y = _pair(item, where)
        if per == "item":
            x, y = x.unsqueeze(0), y.unsqueeze(0)
        size = _nbytes(x) + _nbytes(y)
        total += size
        charge(size * length if (k == 0 and length is not None) else total)
        xs.append(x)
        ys.append(y)
    if not xs:
        return torch.zeros(0), torch.zeros(0)
    try:
        return torch.cat(xs), torch.cat(ys)
    except RuntimeError as err:
        raise ValueError(f"`{where}` yields {per}s of different shapes ({err}); every input must "
                         "have one shape") from None


def _assemble(x_tr: Tensor, y_tr: Tensor, x_te: Tensor, y_te: Tensor, name: str,
              n_classes: int | None) -> Dataset:
    if len(x_te) == 0 and x_te.ndim == 1 and len(x_tr):  # an empty test split
        x_te, y_te = x_tr[:0], y_tr[:0]
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise ValueError(f"`{name}` has train inputs of shape {tuple(x_tr.shape[1:])} and test "
                         f"inputs of shape {tuple(x_te.shape[1:])}; they must match")
    if y_tr.shape[1:] != y_te.shape[1:] or y_tr.is_floating_point() != y_te.is_floating_point():
        raise ValueError(f"`{name}` has train targets {tuple(y_tr.shape[1:])} ({y_tr.dtype}) and "
                         f"test targets {tuple(y_te.shape[1:])} ({y_te.dtype}); they must match")
    fdtype = x_tr.dtype if x_tr.is_floating_point() else torch.get_default_dtype()
    if not y_tr.is_floating_point() and y_tr.dtype is not torch.bool:
        if y_tr.ndim != 1:
            raise ValueError(f"`{name}` has integer targets of shape {tuple(y_tr.shape)}; give "
                             "class labels [N] (made one-hot) or float targets")
        both = torch.cat([y_tr, y_te]).long()
        if len(both) and int(both.min()) < 0:
            raise ValueError(f"`{name}` has negative class labels (min {int(both.min())}); "
                             "labels must be 0..n_classes-1")
        top = int(both.max()) + 1 if len(both) else 1
        if n_classes is not None and top > n_classes:
            raise ValueError(f"`{name}` has class label {top - 1}, but `n_classes` is "
                             f"{n_classes}; labels must be 0..n_classes-1")
        n_classes = top if n_classes is None else int(n_classes)
        lab_tr, lab_te = y_tr.long(), y_te.long()
        y_tr, y_te = (torch.nn.functional.one_hot(lab, n_classes).to(fdtype)
                      for lab in (lab_tr, lab_te))
    else:
        y_tr, y_te = y_tr.to(fdtype), y_te.to(fdtype)
        n_classes = math.prod(y_tr.shape[1:]) if y_tr.ndim > 1 else 1
        lab_tr = lab_te = None
        if y_tr.ndim == 2 and _one_hot(y_tr) and _one_hot(y_te):
            lab_tr, lab_te = y_tr.argmax(1), y_te.argmax(1)
    return Dataset(X_train=x_tr, Y_train=y_tr, labels_train=lab_tr, X_test=x_te, Y_test=y_te,
                   labels_test=lab_te, name="torch", n_classes=n_classes)


def _one_hot(y: Tensor) -> bool:
    """Rows of 0s with one 1 (an empty split counts as one-hot)."""
    if y.numel() == 0:
        return True
    return bool(((y == 0) | (y == 1)).all() and (y.sum(1) == 1).all())


def for_training(data: Any, *, name: str = "data") -> tuple[Any, bool]:
    """``as_dataset(data)`` with int64 zero placeholders for absent labels, and whether they were
    absent (then :func:`drop_accuracies` removes the meaningless accuracies from the metrics)."""
    ds = as_dataset(data, name=name)
    if all(getattr(ds, k, None) is not None for k in ("labels_train", "labels_test")):
        return ds, False
    zeros = {k: torch.zeros(len(getattr(ds, x)), dtype=torch.long)
             for k, x in (("labels_train", "X_train"), ("labels_test", "X_test"))}
    if isinstance(ds, Dataset):
        return dataclasses.replace(ds, **zeros), True
    return Dataset(X_train=ds.X_train, Y_train=ds.Y_train, X_test=ds.X_test, Y_test=ds.Y_test,
                   name=getattr(ds, "name", "data"), n_classes=int(getattr(ds, "n_classes", 1)),
                   **zeros), True


def drop_accuracies(metrics: dict[str, Any]) -> None:
    """Set the accuracy metrics (``acc_*``) to None: regression targets have no classes."""
    for k in list(metrics):
        if k.startswith("acc_"):
            metrics[k] = None
