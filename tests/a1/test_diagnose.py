"""weakcorr.diagnose: known slopes are recovered, verdicts follow them, zeros don't crash."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from weakcorr import _diagnose, data, models
from weakcorr._diagnose import Measurement, analyze

WIDTHS = (16, 32, 64, 128, 256)


def _synthetic(*, c02=-1.0, c03=-1.5, c11=-0.5, hg=-0.5, err=-1.0, err_r=None, dev_late=0.0,
               seeds=8, noise=0.05, seed=0) -> list[Measurement]:
    """Measurements with known width exponents (log-normal noise) and deviation curves that
    grow like s^2 up to step 20, then like s^dev_late up to step 100."""
    rng = np.random.default_rng(seed)
    out = []
    for w in WIDTHS:
        for s in range(seeds):
            def v(e: float | None, scale: float = 1.0) -> float | None:
                return None if e is None else scale * w**e * math.exp(noise * rng.standard_normal())
            error = v(err)
            curve = [(k, error * (k / 20) ** 2 if k < 20 else error * (k / 20) ** dev_late
                      * math.exp(0.01 * rng.standard_normal())) for k in range(1, 101)]
            out.append(Measurement(width=w, seed=s, lr=0.1, c02=v(c02), c03=v(c03), c11=v(c11),
                                   hg_ratio=v(hg), error=error, error_r=v(err_r), curve=curve))
    return out


def _verdict(res, prefix):
    return next(v for v in res.verdicts if v.claim.startswith(prefix))


def test_recovers_known_slopes_and_consistent_verdicts():
    res = analyze(_synthetic(), n_boot=400)
    for name, want in (("c02", -1.0), ("c03", -1.5), ("c11", -0.5), ("hg_ratio", -0.5),
                       ("error", -1.0)):
        e = res.exponents[name]
        assert e.status == "fit" and e.shape == "exact"
        assert e.upper[1] - 0.02 <= want <= e.upper[2] + 0.02, (name, e.upper)
        assert e.upper[0] == pytest.approx(want, abs=0.04)
        assert e.central[0] == pytest.approx(want, abs=0.04)
    assert res.mu[0] == pytest.approx(1.0, abs=0.05)
    assert _verdict(res, "Theorem 3.1").verdict == "consistent"
    assert _verdict(res, "Theorem 3.2").verdict == "consistent"
    assert _verdict(res, "Corollary 4.1").verdict == "consistent"  # flat in the later half
    assert res.deviation_slopes[256][0] == pytest.approx(0.0, abs=0.02)


def test_slow_correlations_violate_the_theorems():
    """Error ~ 1/n (m = n) but C^{0,2} ~ n^-0.25: Eq. 14 needs C^{0,2} <= n^-1."""
    res = analyze(_synthetic(c02=-0.25), n_boot=400)
    v = _verdict(res, "Theorem 3.1")
    assert v.verdict == "not consistent" and "✗" in v.detail
    assert v.detail.startswith("C^{0,2} ~ n^-0.2") and v.detail.count("✓") == 2
    # Eq. 17 asks C^{0,3} <= m^{-3/2} = n^-1.5: a C^{0,3} ~ n^-1 passes Eq. 14 but not Eq. 17.
    res = analyze(_synthetic(c03=-1.0), n_boot=400)
    assert _verdict(res, "Theorem 3.1").verdict == "consistent"
    assert _verdict(res, "Theorem 3.2").verdict == "not consistent"


def test_growing_deviation_is_not_flat():
    res = analyze(_synthetic(dev_late=0.8), n_boot=200)
    v = _verdict(res, "Corollary 4.1")
    assert v.verdict == "not consistent" and "+0.80" in v.detail


def test_lr_reparametrisation_shift():
    """r(n) = n^-0.5 and an error that moves by exactly r: Eq. 18 consistent, shift matches."""
    res = analyze(_synthetic(err_r=-1.5), r_exponent=-0.5, n_boot=400)
    v = _verdict(res, "Eq. 18")
    assert v.verdict == "consistent" and "matches r" in v.detail
    res = analyze(_synthetic(err_r=-0.5), r_exponent=-0.5, n_boot=400)  # error grew with r<1
    assert _verdict(res, "Eq. 18").verdict == "not consistent"


def test_non_decreasing_error_is_not_linearization():
    res = analyze(_synthetic(err=0.2), n_boot=200)
    assert _verdict(res, "Linearization").verdict == "not consistent"
    assert _verdict(res, "Theorems 3.1 / 3.2").verdict == "not assessed"


def test_zeros_and_missing_values():
    ms = _synthetic(c02=None)
    for m in ms:
        m.c02, m.c03 = 0.0, (0.0 if m.seed % 2 else m.c03)
    res = analyze(ms, n_boot=200)
    assert res.exponents["c02"].status == "zero"
    assert res.exponents["c03"].status == "insufficient"  # 4 positive of 8 per width < 5
    assert "C^{0,2} ≡ 0" in _verdict(res, "Theorem 3.1").detail


def test_unassessed_quantities_never_count_as_passes():
    """Review A #5a: a theorem whose correlations were not measured was 'consistent'."""
    res = analyze(_synthetic(c02=None, c03=None, c11=None), n_boot=200)
    for claim in ("Theorem 3.1", "Theorem 3.2"):
        v = _verdict(res, claim)
        assert v.verdict == "not assessed" and v.detail.count("(not assessed") == 3
        assert "NOT ASSESSED at the measured widths" in v.line()
    res = analyze(_synthetic(c03=None), n_boot=200)  # two of three assessed, both pass
    v = _verdict(res, "Theorem 3.1")
    assert v.verdict == "consistent on what was assessed (1 of 3 not assessed)"
    assert v.line().startswith("Theorem 3.1 (Eq. 14: C^d = O(1/m), C^{D,d} = O(1/√m)): "
                               "CONSISTENT ON WHAT WAS ASSESSED (1 of 3 not assessed) at")
    # A failure among the assessed ones is still a failure.
    assert _verdict(analyze(_synthetic(c02=-0.25, c03=None), n_boot=200),
                    "Theorem 3.1").verdict == "not consistent"


@pytest.mark.parametrize("checks,want", [
    ([], "not assessed"), ([None, None], "not assessed"), ([True, True], "consistent"),
    ([True, None, True], "consistent on what was assessed (1 of 3 not assessed)"),
    ([True, None, False], "not consistent"),
])
def test_combine_checks(checks, want):
    assert _diagnose.combine_checks(checks) == want


class RandomFeatures(nn.Module):
    """f(x) = W tanh(A x) + b with A a fixed buffer: linear in its parameters (W, b)."""

    def __init__(self, width: int, d_in: int = 64, d_out: int = 10) -> None:
        super().__init__()
        self.register_buffer("A", torch.randn(width, d_in) / math.sqrt(d_in))
        self.out = nn.Linear(width, d_out)

    def forward(self, x):
        return self.out(torch.tanh(x @ self.A.T))


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", n_train=16, n_test=8, seed=0)


def test_model_linear_in_theta_reports_zeros(digits, tmp_path):
    res = _diagnose.diagnose(RandomFeatures, digits, widths=[4, 8, 16], lr=0.5, steps=6,
                             seeds=5, n_inputs=4, n_boot=100)
    for name in ("c02", "c03", "c11", "hg_ratio"):
        assert res.exponents[name].status == "zero"
    assert res.exponents["error"].status == "rounding"
    lines = "\n".join(res.lines())
    assert "f = f_lin to float precision, the model is linear in θ" in lines
    assert "Theorem 3.1 (Eq. 14): CONSISTENT" in lines and "identically 0" in lines
    paths = _diagnose.write_report(res, tmp_path)
    assert "identically 0" in paths["markdown"].read_text()


def test_mlp_end_to_end_tiny(digits, tmp_path):
    def make(width, seed):
        return models.mlp(64, [width], 10, activation="erf", parameterization="ntk", seed=seed)

    seen = []
    res = _diagnose.diagnose(make, digits, widths=[4, 8, 16], lr=1.0, steps=8, seeds=5,
                             n_inputs=4, n_boot=100, r=-0.5, hessian_iters=5,
                             progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (15, 15)
    assert {k for k, e in res.exponents.items() if e.status == "fit"} >= {"c02", "c03", "c11",
                                                                           "error", "error_r"}
    claims = [v.claim.split(" (")[0] for v in res.verdicts]
    assert claims[:3] == ["Linearization", "Theorem 3.1", "Theorem 3.2"] and "Eq. 18" in claims
    paths = _diagnose.write_report(res, tmp_path)
    md = paths["markdown"].read_text()
    assert "## Verdicts" in md and "Corollary 4.1" in md
    assert all(p.exists() and p.stat().st_size > 5000 for p in paths["figures"])
    back = json.loads(paths["json"].read_text())
    assert len(back["measurements"]) == 15 and back["settings"]["r_exponent"] == pytest.approx(-0.5)


def test_make_model_of_width_only_is_seeded(digits):
    built = []

    def make(width):
        built.append(torch.randn(1).item())
        return models.mlp(64, [width], 10, activation="erf")

    state = torch.random.get_rng_state()
    _diagnose._make(make, 4, 3)
    _diagnose._make(make, 4, 3)
    assert built[0] == built[1] and torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("kwargs,match", [
    ({"widths": [8, 16]}, r"`widths` must hold at least 3 distinct positive widths"),
    ({"seeds": 3}, r"`seeds` must give at least 5 distinct seeds"),
    ({"lr": 0.0}, r"`lr` must be a finite number > 0, got 0.0"),
    ({"steps": 1}, r"`steps` must be an integer >= 2, got 1"),
    ({"n_inputs": 100}, r"`n_inputs` must be in 2..16"),
    ({"r": "sqrt"}, r"`r` must be None, an exponent"),
    ({"batch_size": 17}, r"`batch_size` must be None \(full batch\) or in 1..16"),
    ({"lr_exponent": math.nan}, r"`lr_exponent` must be a finite number"),
    ({"lr_exponent": 1000.0}, r"`lr_exponent` \(1000.0\) gives the learning rate .* inf at width"),
    ({"r": -1000.0}, r"`r` \(-1000.0\) gives the learning rate .* = 0.0 at width 4"),
])
def test_bad_arguments(digits, kwargs, match):
    args = {"widths": [4, 8, 16], "lr": 0.1, "steps": 4, "seeds": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        _diagnose.diagnose(lambda w, s: models.mlp(64, [w], 10, activation="erf"), digits, **args)


def test_cuda_device_without_cuda_is_a_clear_error(digits, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"`device` is 'cuda' but CUDA is not available here"):
        _diagnose.diagnose(lambda w, s: models.mlp(64, [w], 10), digits, widths=[4, 8, 16],
                           lr=0.1, steps=4, seeds=5, device="cuda")


@pytest.mark.parametrize("make", [
    lambda tmp: tmp / "f",  # a file
    lambda tmp: tmp / "f" / "sub",  # under a file
])
def test_check_writable_dir(tmp_path, make):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"^`--out` '.*': '.*/f' is a file"):
        _diagnose.check_writable_dir(make(tmp_path), "--out")
    _diagnose.check_writable_dir(tmp_path / "new" / "deeper", "--out")  # creatable: fine
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_wider_mlp_linearizes_with_the_known_rates():
    """NTK-parameterized erf MLP on MNIST-5k, widths 32-256: the error decreases with width and
    C^{0,2} decays at least like n^{-1/2} (the paper's √n-weak correlations)."""
    ds = data.load("mnist5k", n_train=64, n_test=32, seed=0)

    def make(width, seed):
        return models.mlp(784, [width], 10, activation="erf", parameterization="ntk", seed=seed)

    res = _diagnose.diagnose(make, ds, widths=[32, 64, 128, 256], lr=1.0, steps=30, seeds=5,
                             n_inputs=8, n_boot=300)
    assert res.mu is not None and res.mu[1] > 0
    assert res.exponents["c02"].upper[2] < -0.5
    assert _verdict(res, "Theorem 3.1").verdict == "consistent"
