"""Refusals before any work (random / batch-dependent modules), BatchNorm in eval mode with its
buffers untouched, and the derivative self-check naming the module that is wrong."""

from __future__ import annotations

import re
import types

import pytest
import torch
from torch import Tensor, nn

import weakcorr as wc
import weakcorr.correlations as C
from weakcorr.ntk import empirical_ntk
from weakcorr.train import paired_sgd

DT = torch.float64


def _mlp(*middle: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), *middle, nn.Linear(4, 2)).to(DT)


def _x(n: int = 4) -> Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(1), dtype=DT)


class Attn(nn.Module):
    def __init__(self, **kw: object) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 4)
        self.layers = nn.ModuleList([nn.Identity(), nn.MultiheadAttention(4, 2, batch_first=True,
                                                                        **kw)])
        self.out = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)[:, None].expand(-1, 2, -1)
        return self.out(self.layers[1](h, h, h)[0].mean(1))


RANDOM = {
    "dropout": (lambda: _mlp(nn.Dropout(0.1)),
                r"model.1 \(Dropout\) is in training mode: its output is random \(p=0.1\)"),
    "alpha_dropout": (lambda: _mlp(nn.AlphaDropout(0.2)), r"model.1 \(AlphaDropout\) is in training mode"),
    "feature_alpha_dropout": (lambda: _mlp(nn.FeatureAlphaDropout(0.2)), r"model.1 \(FeatureAlphaDropout\)"),
    "dropout1d": (lambda: _mlp(nn.Dropout1d(0.2)), r"model.1 \(Dropout1d\)"),
    "dropout2d": (lambda: _mlp(nn.Dropout2d(0.2)), r"model.1 \(Dropout2d\)"),
    "dropout3d": (lambda: _mlp(nn.Dropout3d(0.2)), r"model.1 \(Dropout3d\)"),
    "rrelu": (lambda: _mlp(nn.RReLU()), r"model.1 \(RReLU\) is in training mode: its negative slope"),
    "batch_norm_train": (lambda: _mlp(nn.BatchNorm1d(4)),
                         r"model.1 \(BatchNorm1d\) is in training mode: it normalises every input by its batch"),
    "mha_dropout": (lambda: Attn(dropout=0.1).to(DT),
                    r"model.layers.1 \(MultiheadAttention\) is in training mode: its attention weights"),
    "encoder_layer_dropout": (lambda: nn.Sequential(nn.TransformerEncoderLayer(4, 2, 8, batch_first=True)),
                              r"model.0.self_attn \(MultiheadAttention\) is in training mode"),
}
IDS = list(RANDOM)


@pytest.mark.parametrize("name", IDS)
def test_functional_refuses_random_modules_in_training_mode(name):
    build, message = RANDOM[name]
    with pytest.raises(ValueError, match=message) as info:
        wc.functional(build())
    assert "model.eval()" in str(info.value) and "eval_mode=True" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", IDS)
def test_eval_mode_flag_and_model_eval_accept_them(name):
    build, _ = RANDOM[name]
    model = build()
    fm = wc.functional(model, eval_mode=True)
    assert not model.training
    wc.functional(build().eval())
    assert fm.n_params > 0


def test_zero_probability_dropout_is_accepted():
    wc.functional(_mlp(nn.Dropout(0.0)))


def test_entry_points_refuse_a_model_put_back_in_training_mode():
    model = _mlp(nn.Dropout(0.1)).eval()
    fm = wc.functional(model)
    model.train()
    x = _x()
    msg = r"model.1 \(Dropout\) is in training mode"
    with pytest.raises(ValueError, match=msg):
        C.diagonal(fm, x, d=2, lr=1.0)
    with pytest.raises(ValueError, match=msg):
        C.tensor(fm, x, [x], lr=1.0)
    with pytest.raises(ValueError, match=msg):
        empirical_ntk(fm, x)
    with pytest.raises(ValueError, match=msg):
        empirical_ntk(model, x)


def _data(n: int = 8):
    g = torch.Generator().manual_seed(2)
    X, Y = torch.randn(n, 3, generator=g, dtype=DT), torch.randn(n, 2, generator=g, dtype=DT)
    lab = Y.argmax(-1)
    return types.SimpleNamespace(X_train=X, Y_train=Y, labels_train=lab, X_test=X, Y_test=Y,
                                 labels_test=lab)


def test_paired_sgd_refuses_dropout_before_training():
    progress = []
    with pytest.raises(ValueError, match=r"model.1 \(Dropout\) is in training mode.*model.eval"):
        paired_sgd(_mlp(nn.Dropout(0.1)), _data(), lr=0.1, steps=3, batch_size=4, seed=0,
                   progress=lambda s, n: progress.append(s))
    assert progress == []


def test_batch_norm_without_running_stats_is_refused_even_in_eval_mode():
    model = _mlp(nn.BatchNorm1d(4, track_running_stats=False)).eval()
    with pytest.raises(ValueError, match=r"model.1 \(BatchNorm1d\) cannot be differentiated per "
                                         r"input: it has no running statistics"):
        wc.functional(model)


def test_batch_norm_eval_works_and_leaves_buffers_untouched():
    bn = nn.BatchNorm1d(4, dtype=DT)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        bn.running_var.copy_(torch.tensor([1.5, 0.7, 1.0, 2.0]))
    model = _mlp(nn.Tanh(), bn).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fm = wc.functional(model)
    x = _x()
    C.diagonal(fm, x, orders=(2, 3), lr=1.0)
    empirical_ntk(fm, x)
    run = paired_sgd(model, _data(), lr=0.1, steps=3, batch_size=4, seed=0)
    assert run.status == "ok"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert int(bn.num_batches_tracked) == 0
    for k, v in fm.buffers.items():
        assert torch.equal(v, before[k]), k


# --- derivative self-check ---------------------------------------------------------------------


class OwnLayerNorm(nn.Module):
    """Calls the ATen kernel directly (not intercepted by exact_ops): wrong jvp-of-jvp."""

    def __init__(self) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.ops.aten.native_layer_norm(self.lin1(x), [4], None, None, 1e-5)[0]
        return self.lin2(h)


def _ln_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(),
                         nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), nn.Linear(4, 2)).to(DT)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_check_derivatives_passes_on_exact_ops(dtype):
    fm = wc.functional(_ln_model().to(dtype))
    rel = wc.functional.check_derivatives(fm, _x().to(dtype))
    assert rel < (1e-12 if dtype == torch.float64 else 1e-4)


def test_check_derivatives_names_the_first_wrong_module():
    fm = wc.functional(_ln_model())
    fm.exact_ops = False  # PyTorch's native kernels: wrong jvp-of-jvp through layer_norm
    with pytest.raises(ValueError, match=r"self-check failed at model.2.1 \(LayerNorm\): the "
                                         r"second derivative .* nested forward mode but"):
        wc.functional.check_derivatives(fm, _x())


class OwnLayerNormLast(OwnLayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        h = self.lin2(torch.tanh(self.lin1(x)))
        return torch.ops.aten.native_layer_norm(h, [2], None, None, 1e-5)[0]


@pytest.mark.parametrize("cls,where", [
    (OwnLayerNorm, "model (OwnLayerNorm: in its own forward code, before model.lin2)"),
    (OwnLayerNormLast, "model (OwnLayerNormLast: in its own forward code)"),
], ids=["between_submodules", "after_the_last"])
def test_check_derivatives_names_the_model_for_its_own_forward_code(cls, where):
    torch.manual_seed(0)
    fm = wc.functional(cls().to(DT))
    with pytest.raises(ValueError, match="self-check failed at " + re.escape(where) + ":"):
        wc.functional.check_derivatives(fm, _x())


def test_correlations_run_the_self_check_once_and_refuse_a_wrong_model():
    torch.manual_seed(0)
    fm = wc.functional(OwnLayerNorm().to(DT))
    x = _x()
    with pytest.raises(ValueError, match="derivative self-check failed"):
        C.diagonal(fm, x, d=2, lr=1.0)
    with pytest.raises(ValueError, match="derivative self-check failed"):
        C.tensor(fm, x, [x], lr=1.0)
    with pytest.raises(ValueError, match="derivative self-check failed"):
        C.norm(fm, x[:1], [x[:1]], D=1, lr=1.0)
    good = wc.functional(_ln_model())
    C.diagonal(good, x, d=2, lr=1.0)
    assert good._derivatives_checked


@pytest.mark.parametrize("kwargs,match", [
    ({"x": torch.zeros(0, 3)}, "`x` must be a non-empty batch"),
    ({"x": [1.0]}, "`x` must be a non-empty batch"),
    ({"x": torch.zeros(2, 3, dtype=DT), "max_rows": 0}, "`max_rows` must be an integer >= 1"),
])
def test_check_derivatives_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wc.functional.check_derivatives(wc.functional(_ln_model()), **kwargs)


def test_eval_mode_must_be_bool():
    with pytest.raises(TypeError, match="`eval_mode` must be True or False"):
        wc.functional(_mlp(), eval_mode="yes")


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.out = nn.GRU(3, 4, batch_first=True), nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.rnn(x)[0][:, -1])


def test_a_model_that_cannot_run_under_the_transforms_gets_one_clear_error():
    torch.manual_seed(0)
    fm = wc.functional(Recurrent().to(DT))
    x = torch.randn(3, 4, 3, dtype=DT)
    with pytest.raises(ValueError, match=r"model \(Recurrent\) cannot run under weakcorr's "
                                         r"transforms .*recurrent layers \(nn.RNN/LSTM/GRU\)"):
        C.diagonal(fm, x, d=2, lr=1.0)
