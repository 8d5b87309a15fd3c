"""weakcorr.data.as_dataset: (train, test) pairs of torch Datasets, DataLoaders, (X, Y) tuples."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from weakcorr import data, models, train


@pytest.fixture(scope="module")
def digits():
    ds = data.load("digits", n_train=40, n_test=8, seed=3)
    assert len(set(ds.labels_train.tolist() + ds.labels_test.tolist())) == 10
    return ds


class Items(Dataset):
    """Map-style: (x, label) items, counting how many were read."""

    def __init__(self, x, y):
        self.x, self.y, self.reads = x, y, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i], int(self.y[i])


class Stream(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y))


def _forms(ds):
    tr, te = (ds.X_train, ds.labels_train), (ds.X_test, ds.labels_test)
    return {
        "tensor-dataset": (TensorDataset(*tr), TensorDataset(*te)),
        "dataloader": (DataLoader(TensorDataset(*tr), batch_size=5),
                       DataLoader(TensorDataset(*te), batch_size=3)),
        "xy-labels": (tr, te),
        "xy-one-hot": ((ds.X_train, ds.Y_train), (ds.X_test, ds.Y_test)),
        "map-style": (Items(*tr), Items(*te)),
        "iterable": (Stream(*tr), Stream(*te)),
        "list-pair": [list(tr), list(te)],
    }


@pytest.mark.parametrize("form", list(_forms(data.load("digits", n_train=2, n_test=1))))
def test_every_form_gives_the_weakcorr_dataset(digits, form):
    got = data.as_dataset(_forms(digits)[form])
    for k in ("X_train", "Y_train", "labels_train", "X_test", "Y_test", "labels_test"):
        torch.testing.assert_close(getattr(got, k), getattr(digits, k), rtol=0, atol=0)
    assert got.n_classes == 10


def test_weakcorr_datasets_pass_through(digits):
    assert data.as_dataset(digits) is digits


def test_n_classes_from_the_argument_or_a_classes_attribute():
    x, y = torch.zeros(4, 2), torch.tensor([0, 1, 1, 0])
    assert data.as_dataset(((x, y), (x, y)), n_classes=5).Y_train.shape == (4, 5)
    tds = TensorDataset(x, y)
    tds.classes = ["a", "b", "c"]  # the torchvision convention
    assert data.as_dataset((tds, tds)).n_classes == 3
    with pytest.raises(ValueError, match="has class label 1, but `n_classes` is 1"):
        data.as_dataset(((x, y), (x, y)), n_classes=1)


@pytest.mark.parametrize("form", ["dataloader", "map-style", "xy-labels"])
def test_paired_sgd_gives_the_same_run(digits, form):
    model = models.mlp(64, [8], 10, activation="tanh", seed=0)
    kw = dict(lr=0.2, steps=4, batch_size=6, seed=1, eval_every=2)
    ref = train.paired_sgd(model, digits, **kw)
    got = train.paired_sgd(model, _forms(digits)[form], **kw)
    assert got.metrics == ref.metrics
    assert got.logs == ref.logs


def test_regression_targets_have_no_labels_and_no_accuracies():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 3, generator=gen), torch.randn(12, 2, generator=gen)
    ds = data.as_dataset(((x[:8], y[:8]), (x[8:], y[8:])))
    assert ds.labels_train is None and ds.labels_test is None and ds.n_classes == 2
    model = models.mlp(3, [4], 2, activation="tanh", seed=0)
    for impl in ("autograd", "auto"):
        res = train.paired_sgd(model, ds, lr=0.1, steps=3, batch_size=4, seed=0,
                               implementation=impl)
        assert res.status == "ok" and res.metrics["mse_test"] > 0
        assert all(v is None for k, v in res.metrics.items() if k.startswith("acc_"))
        assert res.metrics["loss_f_test"] is not None


def test_oversize_is_refused_before_reading_it_all(digits):
    items = Items(digits.X_train, digits.labels_train)
    with pytest.raises(ValueError) as err:
        data.as_dataset((items, items), max_bytes=1000)
    msg = str(err.value)
    assert msg.startswith("`data[0] (train)` would take ~") and "`max_bytes`" in msg
    assert "torch.utils.data.Subset" in msg
    assert items.reads == 1  # sized from the first item
    loader = DataLoader(TensorDataset(digits.X_train, digits.labels_train), batch_size=4)
    with pytest.raises(ValueError, match=r"^`data\[0\] \(train\)` would take"):
        data.as_dataset((loader, loader), max_bytes=1000)
    tr = (digits.X_train, digits.Y_train)  # the budget covers both splits together
    one = digits.X_train.numel() * 4 + digits.Y_train.numel() * 4
    with pytest.raises(ValueError, match=r"^`data\[1\] \(test\)`"):
        data.as_dataset((tr, tr), max_bytes=int(1.5 * one))
    data.as_dataset((tr, tr), max_bytes=2 * one)


@pytest.mark.parametrize("bad,exc,needle", [
    (TensorDataset(torch.zeros(3, 2), torch.zeros(3)), TypeError,
     "a single split was given: pass (train, test)"),
    ((torch.zeros(3, 2), torch.zeros(3)), TypeError, "is a pair of tensors"),
    ("mnist", TypeError, "got str"),
    ((TensorDataset(torch.zeros(3, 2)), TensorDataset(torch.zeros(3, 2))), ValueError,
     "TensorDataset of 1 tensor(s)"),
    (((torch.zeros(3, 2), torch.zeros(2)), (torch.zeros(1, 2), torch.zeros(1))), ValueError,
     "has 3 inputs but 2 targets"),
    (((torch.zeros(3, 2), torch.zeros(3)), (torch.zeros(1, 4), torch.zeros(1))), ValueError,
     "train inputs of shape (2,) and test inputs of shape (4,)"),
    (((torch.zeros(2, 2), torch.tensor([0, -1])), (torch.zeros(1, 2), torch.tensor([0]))),
     ValueError, "negative class labels"),
    ((Stream(torch.zeros(2, 2), torch.zeros(2)), [1, 2]), TypeError, "got list"),
], ids=["single", "tensor-pair", "str", "no-targets", "lengths", "shapes", "negative", "split"])
def test_bad_data_is_refused_naming_it(bad, exc, needle):
    with pytest.raises(exc) as err:
        data.as_dataset(bad)
    assert str(err.value).startswith("`data") and needle in str(err.value)


def test_items_without_targets_are_refused():
    class XOnly(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(3)

    with pytest.raises(ValueError, match=r"^`data\[0\] \(train\)` must yield \(x, y\) pairs"):
        data.as_dataset((XOnly(), XOnly()))


def test_images_unflattened(digits):
    img = data.load("digits", n_train=40, n_test=8, seed=3, flatten=False)
    assert img.X_train.shape == (40, 1, 8, 8)
    torch.testing.assert_close(img.X_train.reshape(40, -1), digits.X_train, rtol=0, atol=0)


@pytest.mark.slow
def test_diagnose_gives_the_same_measurements_from_a_torch_pair(digits):
    import weakcorr as wc

    def fam(width):
        return torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.Tanh(),
                                   torch.nn.Linear(width, 10))

    kw = dict(widths=[2, 3, 4], lr=0.1, steps=2, seeds=5, n_inputs=2, hessian_iters=0,
              norm_restarts=1, n_boot=40)
    ref = wc.diagnose(fam, digits, **kw)
    got = wc.diagnose(fam, _forms(digits)["dataloader"], **kw)
    assert [m.__dict__ for m in got.measurements] == [m.__dict__ for m in ref.measurements]


def test_an_object_without_labels_gets_them_from_its_targets(digits):
    from types import SimpleNamespace

    got = data.as_dataset(SimpleNamespace(X_train=digits.X_train, Y_train=digits.Y_train,
                                          X_test=digits.X_test, Y_test=digits.Y_test))
    torch.testing.assert_close(got.labels_train, digits.labels_train, rtol=0, atol=0)
    reg = data.as_dataset(SimpleNamespace(X_train=digits.X_train, Y_train=digits.Y_train * 0.5,
                                          X_test=digits.X_test, Y_test=digits.Y_test * 0.5))
    assert reg.labels_train is None and reg.labels_test is None
