"""TF32 stays off while weakcorr trains on CUDA (the f − f_lin differences are far below its rounding)."""

from __future__ import annotations

import pytest
import torch

from weakcorr import _precision


@pytest.fixture
def restore_tf32():
    before = _precision.tf32_state()
    yield
    torch.backends.cuda.matmul.allow_tf32 = before["matmul_allow_tf32"]
    torch.backends.cudnn.allow_tf32 = before["cudnn_allow_tf32"]
    torch.set_float32_matmul_precision(before["float32_matmul_precision"])


def test_full_precision_switches_tf32_off_on_cuda_and_restores(restore_tf32):
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    with _precision.full_precision("cuda"):  # the flags are global: no GPU needed to check them
        assert _precision.tf32_state() == {"matmul_allow_tf32": False, "cudnn_allow_tf32": False,
                                           "float32_matmul_precision": "highest"}
    assert _precision.tf32_state() == {"matmul_allow_tf32": True, "cudnn_allow_tf32": True,
                                       "float32_matmul_precision": "high"}


def test_full_precision_leaves_cpu_runs_alone(restore_tf32):
    torch.set_float32_matmul_precision("high")
    with _precision.full_precision("cpu"):
        assert torch.get_float32_matmul_precision() == "high"


def test_training_entry_points_run_in_full_precision(restore_tf32, monkeypatch):
    """paired_sgd and the seed batches pass their device to full_precision."""
    from weakcorr import _vmap_train, data, models, train

    seen = []
    real = _precision.full_precision

    def spy(device):
        seen.append(str(device))
        return real(device)

    monkeypatch.setattr(_precision, "full_precision", spy)
    ds = data.load("teacher", n_train=8, n_test=4, d_in=3, d_out=2)
    nets = [models.mlp(3, [4], 2, activation="tanh", seed=s) for s in (0, 1)]
    train.paired_sgd(nets[0], ds, lr=0.1, steps=2, batch_size=4, seed=0, device="cpu")
    _vmap_train.paired_sgd_seeds(nets, ds, seeds=[0, 1], lr=0.1, steps=2, batch_size=4)
    assert seen[0] == "cpu" and seen[-1] == "cpu" and len(seen) >= 2
