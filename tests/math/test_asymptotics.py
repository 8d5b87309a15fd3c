"""`weakcorr.asymptotics`: quantile exponents against closed forms, a second least-squares
implementation, the paper's two-point example (Sec. 2.1), and bootstrap coverage."""

from __future__ import annotations

import ast
import doctest
import json
import math
import pathlib
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weakcorr import asymptotics
from weakcorr.asymptotics import OrderFit, QuantileFit, Verdict, fit_order, quantile_curves

NS = (16, 64, 256, 1024)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240517)


def half_normal(rng: np.random.Generator, m: int = 200) -> dict[int, np.ndarray]:
    """|N(0,1)| n^(-1/2): every quantile is c_q n^(-1/2), so every exponent is exactly -1/2."""
    return {n: np.abs(rng.standard_normal(m)) / np.sqrt(n) for n in NS}


def two_point(rng: np.random.Generator, m: int = 200) -> dict[int, np.ndarray]:
    """The paper's variable (Sec. 2.1): 1 or n with probability 1/2 each; O(1) <= O(M) <= O(n)."""
    return {n: np.where(rng.random(m) < 0.5, 1.0, float(n)) for n in NS}


# --- closed forms -------------------------------------------------------------------------------


@pytest.mark.parametrize("a", [-0.5, 0.0, 1.0, 2.5], ids=lambda a: f"a={a}")
def test_deterministic_power_law_is_exact(a):
    # Constant samples c n^a: every resample equals the sample, so the CI collapses onto a.
    c = 3.0
    fit = fit_order({n: np.full(7, c * n**a) for n in NS}, n_boot=50, generator=0)
    for f in fit.fits:
        assert f.exponent == pytest.approx(a, abs=1e-12)
        assert f.ci_low == pytest.approx(a, abs=1e-12)
        assert f.ci_high == pytest.approx(a, abs=1e-12)
        assert f.intercept == pytest.approx(math.log(c), abs=1e-12)
        assert f.r2 == 1.0
    assert fit.verdict is Verdict.EXACT
    assert fit.exponent == pytest.approx(a, abs=1e-12)


def test_slope_intercept_r2_match_polyfit(rng):
    # Second implementation: np.polyfit on the quantile curves, R^2 from its residuals.
    samples = {n: rng.lognormal(mean=0.3 * np.log(n), sigma=1.0 + n / 2048, size=40) for n in NS}
    fit = fit_order(samples, quantiles=(0.1, 0.5, 0.9), n_boot=50, generator=0)
    curves = quantile_curves(samples, (0.1, 0.5, 0.9))
    x = np.log(curves.ns)
    for f, row in zip(fit.fits, curves.values, strict=True):
        y = np.log(row)
        slope, intercept = np.polyfit(x, y, 1)
        resid = y - (slope * x + intercept)
        r2 = 1 - resid @ resid / np.sum((y - y.mean()) ** 2)
        np.testing.assert_allclose([f.exponent, f.intercept, f.r2], [slope, intercept, r2],
                                   rtol=1e-10, atol=1e-12)


def test_quantile_curves_known_values():
    samples = {10: [5.0, 1.0, 4.0, 2.0, 3.0], 1: [1.0, 2.0, 3.0, 4.0, 5.0], 2.5: [7.0]}
    curves = quantile_curves(samples, (0.75, 0.25))
    np.testing.assert_array_equal(curves.ns, [1.0, 2.5, 10.0])
    np.testing.assert_array_equal(curves.quantiles, [0.25, 0.75])
    # Linear interpolation (type 7): position q (m - 1) among the sorted samples.
    np.testing.assert_array_equal(curves.values, [[2.0, 7.0, 2.0], [4.0, 7.0, 4.0]])


# --- the paper's examples -----------------------------------------------------------------------


def test_half_normal_exponent_is_minus_half_exact(rng):
    fit = fit_order(half_normal(rng), generator=1)
    for f in fit.fits:
        assert f.ci_low <= -0.5 <= f.ci_high, f
        assert f.ci_high - f.ci_low < 0.5  # informative, not a vacuous interval
    assert fit.verdict == "exact"
    assert fit.exponent == fit.central.exponent == pytest.approx(-0.5, abs=0.1)
    assert fit.exponent_ci == (fit.central.ci_low, fit.central.ci_high)
    assert fit.central.q == 0.5
    assert str(fit).endswith("exact") and "O(n^-0.5" in str(fit)


def test_two_point_example_has_bounds_only(rng):
    # 0.95-quantile = n and 0.05-quantile = 1 at every n (and in every resample, barring a
    # resample with < 5% of one value, probability < 1e-40): exponents exactly 1 and 0.
    fit = fit_order(two_point(rng), generator=2)
    assert fit.upper.exponent == pytest.approx(1.0, abs=1e-12)
    assert fit.lower.exponent == pytest.approx(0.0, abs=1e-12)
    assert (fit.upper.ci_low, fit.upper.ci_high) == pytest.approx((1.0, 1.0), abs=1e-12)
    assert (fit.lower.ci_low, fit.lower.ci_high) == pytest.approx((0.0, 0.0), abs=1e-12)
    assert fit.verdict == "bounds"
    assert fit.exponent is None and fit.exponent_ci is None
    assert fit.summary() == "O(n^0.00 [0.00, 0.00]) <= O(M) <= O(n^1.00 [1.00, 1.00]) bounds"


def test_touching_intervals_count_as_overlap():
    lo = QuantileFit(q=0.05, exponent=0.0, ci_low=-0.1, ci_high=0.5, intercept=0.0, r2=1.0)
    hi = QuantileFit(q=0.95, exponent=1.0, ci_low=0.5, ci_high=1.1, intercept=0.0, r2=1.0)
    apart = QuantileFit(q=0.95, exponent=1.0, ci_low=0.5 + 1e-9, ci_high=1.1, intercept=0.0,
                        r2=1.0)
    assert asymptotics._overlap(lo, hi)
    assert not asymptotics._overlap(lo, apart)


# --- coverage -----------------------------------------------------------------------------------


def _coverage(rng: np.random.Generator, trials: int, m: int) -> tuple[np.ndarray, float]:
    covered = np.zeros(3)
    exact = 0
    for _ in range(trials):
        fit = fit_order(half_normal(rng, m), n_boot=400, generator=rng)
        covered += [f.ci_low <= -0.5 <= f.ci_high for f in fit.fits]
        exact += fit.verdict is Verdict.EXACT
    return covered / trials, exact / trials


def test_ci_coverage_40_trials(rng):
    # Nominal 0.95. Chance of < 32/40 at true coverage 0.95: 1.3e-4 (0.015 even at 0.90); an
    # interval half as wide (true coverage ~0.68) passes with probability 0.07, a 50% one 1e-4.
    coverage, exact_rate = _coverage(rng, trials=40, m=50)
    assert np.all(coverage >= 0.8), coverage
    assert exact_rate >= 0.8, exact_rate


@pytest.mark.slow
def test_ci_coverage_400_trials(rng):
    # Chance of < 360/400 at true coverage 0.95: 1.4e-5; at 0.85 it passes with p = 0.002.
    coverage, exact_rate = _coverage(rng, trials=400, m=100)
    assert np.all(coverage >= 0.9), coverage
    assert exact_rate >= 0.9, exact_rate


# --- determinism, serialization -----------------------------------------------------------------


def test_seed_is_deterministic_and_order_free(rng):
    samples = half_normal(rng, 30)
    shuffled = dict(reversed(list(samples.items())))
    a = fit_order(samples, n_boot=100, generator=7)
    assert a == fit_order(shuffled, n_boot=100, generator=7)
    assert a == fit_order(samples, n_boot=100, generator=np.random.default_rng(7))
    assert a != fit_order(samples, n_boot=100, generator=8)
    assert a.ns == NS and a.n_samples == (30,) * 4
    assert all(type(n) is int for n in a.ns)


def test_json_round_trip(rng):
    fit = fit_order(half_normal(rng, 20), quantiles=(0.9, 0.1, 0.5), n_boot=100, generator=3)
    assert [f.q for f in fit.fits] == [0.1, 0.5, 0.9]
    again = OrderFit.from_dict(json.loads(fit.to_json()))
    assert again == fit
    assert again.verdict is fit.verdict
    assert str(again) == str(fit)


_real = st.floats(allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=50, deadline=None)
@given(
    fits=st.lists(st.builds(QuantileFit, _real, _real, _real, _real, _real, _real),
                  min_size=1, max_size=4).map(tuple),
    verdict=st.sampled_from(Verdict),
    ns=st.lists(st.one_of(st.integers(1, 10**12), st.floats(1e-3, 1e12)), min_size=1,
                max_size=5),
    level=st.floats(0.01, 0.99),
    n_boot=st.integers(1, 10**6),
)
def test_json_round_trip_property(fits, verdict, ns, level, n_boot):
    fit = OrderFit(fits=fits, verdict=verdict, ns=tuple(ns), n_samples=tuple(range(len(ns))),
                   level=level, n_boot=n_boot)
    assert OrderFit.from_dict(json.loads(fit.to_json())) == fit


def test_str_is_a_table(rng):
    text = str(fit_order(half_normal(rng, 20), n_boot=100, generator=0))
    lines = text.splitlines()
    assert lines[0].startswith("n = 16, 64, 256, 1024 (20 samples each); 95% bootstrap CIs")
    assert len(lines) == 2 + 3 + 1
    assert lines[-1].startswith("O(n^-0.") and lines[-1].endswith(" exact")


def test_from_dict_rejects_bad_input():
    good = {"schema_version": 1, "verdict": "exact", "ns": [1, 2], "n_samples": [5, 5],
            "level": 0.95, "n_boot": 10, "fits": []}
    with pytest.raises(ValueError, match=r"`data` is missing the keys \['fits'\]"):
        OrderFit.from_dict({k: v for k, v in good.items() if k != "fits"})
    with pytest.raises(ValueError, match=r"`data\['verdict'\]` must be one of"):
        OrderFit.from_dict({**good, "verdict": "tight"})
    with pytest.raises(ValueError, match=r"`data\['schema_version'\]` must be 1, got 2"):
        OrderFit.from_dict({**good, "schema_version": 2})
    with pytest.raises(ValueError, match=r"equal lengths, got 2 and 1"):
        OrderFit.from_dict({**good, "n_samples": [5]})


# --- bad input ----------------------------------------------------------------------------------

_OK = {n: np.linspace(1.0, 2.0, 5) for n in (1, 2, 3)}
_BAD = [
    ("not-mapping", dict(samples_by_n=[1.0, 2.0]), TypeError, r"`samples_by_n` must be a mapping"),
    ("two-ns", dict(samples_by_n={1: [1.0] * 5, 2: [1.0] * 5}), ValueError,
     r"`samples_by_n` must hold at least 3 distinct values of n, got 2"),
    ("n-zero", dict(samples_by_n={**_OK, 0: [1.0] * 5}), ValueError,
     r"`samples_by_n` keys must be positive and finite .* got n=0"),
    ("n-str", dict(samples_by_n={**_OK, "64": [1.0] * 5}), TypeError,
     r"`samples_by_n` keys must be real numbers .* got '64'"),
    ("n-bool", dict(samples_by_n={True: [1.0] * 5, 2: [1.0] * 5, 3: [1.0] * 5}), TypeError,
     r"`samples_by_n` keys must be real numbers"),
    ("2-d", dict(samples_by_n={**_OK, 4: np.ones((5, 2))}), ValueError,
     r"`samples_by_n\[4\]` must be 1-D, got shape \(5, 2\)"),
    ("few", dict(samples_by_n={**_OK, 4: [1.0] * 4}), ValueError,
     r"`samples_by_n\[4\]` must hold at least 5 samples, got 4"),
    ("negative", dict(samples_by_n={**_OK, 8: [1.0, 2.0, -3.0, 4.0, 0.0]}), ValueError,
     r"`samples_by_n\[8\]` must be positive and finite, got 2 bad value\(s\), e.g. -3.0"),
    ("nan", dict(samples_by_n={**_OK, 2.5: [1.0, np.nan, 1.0, 1.0, 1.0]}), ValueError,
     r"`samples_by_n\[2.5\]` must be positive and finite, got 1 bad value\(s\), e.g. nan"),
    ("inf", dict(samples_by_n={**_OK, 9: [np.inf] * 5}), ValueError,
     r"`samples_by_n\[9\]` must be positive and finite"),
    ("q-range", dict(quantiles=(0.0, 0.5)), ValueError,
     r"`quantiles` must lie strictly between 0 and 1, got \(0.0, 0.5\)"),
    ("q-one", dict(quantiles=(0.5,)), ValueError,
     r"`quantiles` must be a 1-D sequence of at least 2"),
    ("q-dup", dict(quantiles=(0.5, 0.9, 0.5)), ValueError, r"`quantiles` must be distinct"),
    ("n-boot", dict(n_boot=39), ValueError, r"`n_boot` must be an int >= 40 for level=0.95"),
    ("n-boot-float", dict(n_boot=100.0), ValueError, r"`n_boot` must be an int"),
    ("level", dict(level=95), ValueError, r"`level` must be a number in \(0, 1\), got 95"),
    ("generator", dict(generator=1.5), TypeError, r"`generator` must be a numpy Generator"),
    ("seed", dict(generator=-1), ValueError, r"`generator` as an int seed must be >= 0, got -1"),
]


@pytest.mark.parametrize("kwargs,exc,match", [b[1:] for b in _BAD], ids=[b[0] for b in _BAD])
def test_bad_input(kwargs, exc, match):
    kwargs = {"samples_by_n": _OK, "n_boot": 100, **kwargs}
    with pytest.raises(exc, match=match):
        fit_order(kwargs.pop("samples_by_n"), **kwargs)


def test_quantile_curves_allows_one_n_but_checks_values():
    assert quantile_curves({4: [2.0]}, (0.5,)).values.shape == (1, 1)
    with pytest.raises(ValueError, match=r"`samples_by_n\[4\]` must be positive"):
        quantile_curves({4: [-2.0]})
    with pytest.raises(ValueError, match=r"`samples_by_n` must hold at least 1"):
        quantile_curves({})


# --- module hygiene -----------------------------------------------------------------------------


def test_docstring_examples_run():
    result = doctest.testmod(asymptotics, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0


def test_top_level_imports_only_numpy_and_stdlib():
    tree = ast.parse(pathlib.Path(asymptotics.__file__).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert names - set(sys.stdlib_module_names) == {"numpy"}
