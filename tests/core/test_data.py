"""weakcorr.data: bundled sets, and IDX / CIFAR readers on files written here byte by byte."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from weakcorr import data


def _write_idx(path, array: np.ndarray, gz: bool):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(raw)
    else:
        path.write_bytes(raw)


def _mnist_folder(tmp_path, gz, n_train=12, n_test=6, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, arr in arrays.items():
        _write_idx(tmp_path / name, arr, gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_round_trip(tmp_path, gz):
    arrays = _mnist_folder(tmp_path, gz)
    ds = data.load("mnist", n_train=12, n_test=6, data_dir=tmp_path, seed=3)
    # Same multiset of rows as written, pixels / 255, labels one-hot.
    want = np.sort(arrays["train-images-idx3-ubyte"].reshape(12, -1) / 255.0, axis=0)
    np.testing.assert_allclose(np.sort(ds.X_train.double().numpy(), axis=0), want, rtol=1e-6)
    assert ds.Y_train.shape == (12, 10)
    torch.testing.assert_close(ds.Y_train.argmax(1), ds.labels_train)
    row = ds.X_train[0].double().numpy() * 255
    match = np.where((arrays["train-images-idx3-ubyte"].reshape(12, -1) == np.round(row)).all(1))[0]
    assert arrays["train-labels-idx1-ubyte"][match[0]] == ds.labels_train[0].item()
    img = data.load("fashion-mnist", n_train=2, n_test=1, data_dir=tmp_path, flatten=False)
    assert img.X_train.shape == (2, 1, 28, 28)


def test_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*in folder"):
        data.load("mnist", n_train=1, n_test=1, data_dir=tmp_path)
    _mnist_folder(tmp_path, gz=False)
    with pytest.raises(ValueError, match="12 samples available"):
        data.load("mnist", n_train=13, n_test=1, data_dir=tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.load("mnist", n_train=1, n_test=1, data_dir=tmp_path)
    path.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 20)
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        data.load("mnist", n_train=1, n_test=1, data_dir=tmp_path)
    with pytest.raises(ValueError, match="`data_dir` is required"):
        data.load("mnist", n_train=1, n_test=1)


def _cifar_folder(folder, n_per_file=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
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
    assert ds.X_train.shape == (20, 3072)
    labels, pixels = records["test_batch.bin"]
    order = [int(np.where((pixels == np.round(r * 255)).all(1))[0][0]) for r in ds.X_test.double().numpy()]
    assert sorted(order) == [0, 1, 2, 3]
    assert [labels[i] for i in order] == ds.labels_test.tolist()
    gray = data.load("cifar10", n_train=20, n_test=4, data_dir=tmp_path, grayscale=True, seed=0)
    r, g, b = (torch.as_tensor(pixels[order[0], k * 1024:(k + 1) * 1024] / 255.0) for k in range(3))
    torch.testing.assert_close(gray.X_test[0].double(), 0.299 * r + 0.587 * g + 0.114 * b,
                               rtol=1e-6, atol=1e-6)
    assert data.load("cifar10", n_train=2, n_test=1, data_dir=tmp_path, flatten=False).X_train.shape == (2, 3, 32, 32)


def test_cifar_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin"):
        data.load("cifar10", n_train=1, n_test=1, data_dir=tmp_path)
    _cifar_folder(tmp_path)
    (tmp_path / "data_batch_3.bin").write_bytes(b"\x01" * 3000)
    with pytest.raises(ValueError, match="not a multiple of the 3073-byte"):
        data.load("cifar10", n_train=1, n_test=1, data_dir=tmp_path)


def test_mnist5k():
    ds = data.load("mnist5k", n_train=400, n_test=100, seed=0)
    assert ds.X_train.shape == (400, 784) and ds.X_test.shape == (100, 784)
    assert ds.X_train.min() >= 0 and ds.X_train.max() <= 1 and ds.X_train.max() > 0.9
    assert set(ds.labels_train.tolist()) == set(range(10))  # shuffled: all classes present
    again = data.load("mnist5k", n_train=400, n_test=100, seed=0)
    other = data.load("mnist5k", n_train=400, n_test=100, seed=1)
    assert torch.equal(ds.X_train, again.X_train) and not torch.equal(ds.X_train, other.X_train)
    # train and test are disjoint draws
    shared = (ds.X_train[:, None, :] == ds.X_test[None, :, :]).all(-1).any()
    assert not shared
    assert "mnist5k: 400 train / 100 test" in ds.describe()
    with pytest.raises(ValueError, match="5000 samples available"):
        data.load("mnist5k", n_train=4500, n_test=600)


def test_digits_and_classes():
    ds = data.load("digits", n_train=100, n_test=50, classes=[3, 7])
    assert ds.X_train.shape == (100, 64) and ds.n_classes == 2 and ds.Y_train.shape == (100, 2)
    assert set(ds.labels_train.tolist()) == {0, 1} and ds.X_train.max() <= 1.0
    with pytest.raises(ValueError, match="not in the data"):
        data.load("digits", n_train=1, n_test=1, classes=[3, 11])


def test_teacher():
    ds = data.load("teacher", n_train=30, n_test=10, seed=2, d_in=5, d_out=3, dtype=torch.float64)
    assert ds.X_train.shape == (30, 5) and ds.Y_train.shape == (30, 3)
    torch.testing.assert_close(ds.labels_train, ds.Y_train.argmax(1))
    again = data.load("teacher", n_train=30, n_test=10, seed=2, d_in=5, d_out=3, dtype=torch.float64)
    assert torch.equal(ds.Y_test, again.Y_test)


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="imagenet"), "`name` must be one of"),
    (dict(name="digits", n_train=0), "`n_train` must be a positive integer"),
    (dict(name="digits", colour=True), "unknown options"),
], ids=["name", "n_train", "option"])
def test_bad_input(kwargs, match):
    args = dict(n_train=5, n_test=5) | kwargs
    with pytest.raises(ValueError, match=match):
        data.load(args.pop("name"), **args)
