"""One log-log least squares for every report (paper Eq. 31), its intervals and its verdicts.

Every width exponent the package reports is the slope ``s`` of

.. math:: \\log y = s \\, \\log x + b

by ordinary least squares (:func:`ols`). Its confidence interval is one of

* the **seed bootstrap** (:func:`seed_bootstrap`, :func:`bootstrap_interval`): whole seeds are
  drawn with replacement, so a seed's runs across widths stay together; the interval is
  ``s ± t_{S-1} · sqrt(S / (S-1)) · sd(bootstrap slopes)`` (``method="t"``, near-nominal
  coverage with few seeds S) or the plain percentile interval;
* the **residual t interval** (:func:`residual_interval`): ``s ± t_{N-2} · SE(s)`` of the
  regression itself, for one seed (it ignores seed-to-seed variation);
* the **t interval of a mean** (:func:`mean_interval`), for a mean of per-seed slopes.

:func:`fit_loglog` puts these together (the A.2 report, the A.1 report, ``diagnose``'s
deviation slopes and the correlation sweep use it). :func:`decide` turns an interval into a
verdict that is only "consistent" or "not consistent" when the interval can tell.

>>> import numpy as np
>>> x = np.log([10.0, 100.0, 1000.0])
>>> ols(x, -2.0 * x + 1.0)[:2]
(-2.0, 1.0)
>>> decide(-1.0, (-4.35, 3.56), bound=-1.0, scale=1.0).word
'inconclusive'
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["INCONCLUSIVE", "Decision", "LogLogFit", "bootstrap_interval", "decide",
           "decide_equal", "fit_loglog", "loglog_slope", "mean_interval", "ols",
           "residual_interval", "seed_bootstrap"]

#: The words of :class:`Decision`.
INCONCLUSIVE = "inconclusive"


def _vector(v: Any, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"`{name}` must be one-dimensional, got shape {a.shape}; pass one value "
                         "per point")
    return a


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = _vector(x, "x"), _vector(y, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"`x` and `y` must have the same length, got {len(xa)} and {len(ya)}")
    return xa, ya


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"`level` must be a number in (0, 1), e.g. 0.95, got {level!r}")
    return float(level)


def _t(level: float, dof: int) -> float:
    from scipy import stats

    return float(stats.t.ppf((1 + level) / 2, dof))


def ols(x: Any, y: Any) -> tuple[float, float, float]:
    """Least-squares line of ``y`` on ``x``: (slope, intercept, R²).

    ``slope = Σ(x − x̄)(y − ȳ) / Σ(x − x̄)²``; NaN for all three when every ``x`` is equal
    (or there are no points). R² is 1 when every ``y`` is equal.

    Raises:
        ValueError: ``x``, ``y`` not one-dimensional or of different lengths.
    """
    x, y = _pair(x, y)
    if not len(x):
        return math.nan, math.nan, math.nan
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx <= 0:
        return math.nan, math.nan, math.nan
    slope = float(((x - xm) * (y - ym)).sum()) / sxx
    intercept = float(ym - slope * xm)
    ss_tot = float(((y - ym) ** 2).sum())
    ss_res = float(((y - intercept - slope * x) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return slope, intercept, r2


def loglog_slope(x: Any, y: Any) -> float:
    """The slope of ``log y`` on ``log x`` (:func:`ols`); NaN unless every value is finite and
    positive and there are two distinct ``x``."""
    x, y = _pair(x, y)
    if not (len(x) >= 2 and np.all(np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0))):
        return math.nan
    return ols(np.log(x), np.log(y))[0]


def residual_interval(x: Any, y: Any, level: float = 0.95) -> tuple[float, float, float]:
    """(slope, low, high): the slope of :func:`ols` ± ``t_{N-2} · SE``, SE from the residuals.

    The interval is NaN with fewer than 3 points (no residual degree of freedom).
    """
    x, y = _pair(x, y)
    level = _check_level(level)
    slope, intercept, _ = ols(x, y)
    if len(x) < 3 or not math.isfinite(slope):
        return slope, math.nan, math.nan
    resid = y - (slope * x + intercept)
    se = math.sqrt(float(resid @ resid) / (len(x) - 2) / float(((x - x.mean()) ** 2).sum()))
    half = _t(level, len(x) - 2) * se
    return slope, slope - half, slope + half


def seed_bootstrap(x: Any, y: Any, seeds: Any, n_boot: int, rng: np.random.Generator
                   ) -> np.ndarray:
    """Slopes of ``n_boot`` least-squares fits on seed-resampled data.

    Each replicate draws the S distinct seeds with replacement and keeps every point of a
    drawn seed; a replicate whose ``x`` are all equal gives NaN. Computed from per-seed
    sufficient statistics (n, Σx, Σy, Σx², Σxy), so the cost does not grow with the points.
    """
    x, y = _pair(x, y)
    seeds = np.asarray(seeds)
    if seeds.shape != x.shape:
        raise ValueError(f"`seeds` must give one seed per point ({len(x)}), got shape "
                         f"{seeds.shape}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise ValueError(f"`n_boot` must be an integer >= 1, got {n_boot!r}")
    uniq, inverse = np.unique(seeds, return_inverse=True)
    sums = np.zeros((len(uniq), 5))
    for col, vals in enumerate((np.ones_like(x), x, y, x * x, x * y)):
        np.add.at(sums[:, col], inverse, vals)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=int(n_boot))
    n, sx, sy, sxx, sxy = (counts @ sums).T
    denom = n * sxx - sx * sx
    with np.errstate(invalid="ignore", divide="ignore"):
        slopes = (n * sxy - sx * sy) / denom
    slopes[~(np.abs(denom) > 1e-12 * np.maximum(1.0, n * sxx))] = np.nan
    return slopes


def bootstrap_interval(slope: float, boots: Any, n_seeds: int, level: float = 0.95,
                       method: str = "t") -> tuple[float, float]:
    """The interval of ``slope`` from bootstrap slopes ``boots`` over ``n_seeds`` seeds.

    ``method="t"``: ``slope ± t_{S-1} · sqrt(S / (S-1)) · sd(boots)``; ``"percentile"``: the
    ``(1 ∓ level)/2`` quantiles of ``boots``. Non-finite replicates are dropped; NaN with
    fewer than 2 finite replicates or 2 seeds.
    """
    level = _check_level(level)
    if method not in ("t", "percentile"):
        raise ValueError(f"`method` must be 't' or 'percentile', got {method!r}")
    b = np.asarray(boots, dtype=float)
    b = b[np.isfinite(b)]
    if b.size < 2 or n_seeds < 2 or not math.isfinite(slope):
        return math.nan, math.nan
    if method == "percentile":
        lo, hi = np.quantile(b, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)
    half = _t(level, n_seeds - 1) * math.sqrt(n_seeds / (n_seeds - 1)) * float(np.std(b, ddof=1))
    return slope - half, slope + half


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the finite ``values``: ``mean ± t_{k-1} · sd / √k``.

    NaN for all three with no finite value; the interval is NaN with one.
    """
    level = _check_level(level)
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(_t(level, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


@dataclasses.dataclass(frozen=True)
class LogLogFit:
    """A fit of :func:`fit_loglog` (natural-log units).

    ``ci_kind``: ``"seeds"`` (seed bootstrap), ``"residual"`` (the regression's t interval,
    one seed) or ``""`` (no interval: ``ci_low``/``ci_high`` are NaN).
    """

    slope: float
    intercept: float
    r2: float
    ci_low: float
    ci_high: float
    ci_kind: str
    n_points: int
    n_seeds: int
    n_x: int


def fit_loglog(x: Any, y: Any, seeds: Any = None, *, n_boot: int = 2000, level: float = 0.95,
               rng: np.random.Generator | int | None = 0, method: str = "t",
               residual_fallback: bool = False) -> LogLogFit:
    """Fit ``log y = slope · log x + intercept`` on the points with finite positive x and y.

    Args:
        x, y: the values (not logs), one per point.
        seeds: the seed of each point (None: one seed). With 2+ distinct seeds the interval
            is the seed bootstrap (:func:`seed_bootstrap`, :func:`bootstrap_interval`).
        n_boot: bootstrap replicates.
        level: the confidence level.
        rng: the bootstrap generator (or a seed for one).
        method: ``"t"`` or ``"percentile"`` (:func:`bootstrap_interval`).
        residual_fallback: without a seed interval, use :func:`residual_interval`.

    Returns:
        A :class:`LogLogFit`; NaN slope with fewer than two distinct ``x``.

    Raises:
        ValueError: for bad shapes, ``level``, ``n_boot`` or ``method``.
    """
    xa, ya = _pair(x, y)
    level = _check_level(level)
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 2:
        raise ValueError(f"`n_boot` must be an integer >= 2, got {n_boot!r}")
    if method not in ("t", "percentile"):
        raise ValueError(f"`method` must be 't' or 'percentile', got {method!r}")
    s = np.zeros(len(xa), dtype=int) if seeds is None else np.asarray(seeds)
    if s.shape != xa.shape:
        raise ValueError(f"`seeds` must give one seed per point ({len(xa)}), got shape {s.shape}")
    ok = np.isfinite(xa) & np.isfinite(ya) & (xa > 0) & (ya > 0)
    lx, ly, s = np.log(xa[ok]), np.log(ya[ok]), s[ok]
    slope = intercept = r2 = lo = hi = math.nan
    if ok.sum() >= 2:
        slope, intercept, r2 = ols(lx, ly)
    n_seeds = len(np.unique(s)) if ok.any() else 0
    kind = ""
    if n_seeds >= 2 and math.isfinite(slope):
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        lo, hi = bootstrap_interval(slope, seed_bootstrap(lx, ly, s, int(n_boot), gen), n_seeds,
                                    level, method)
        kind = "seeds" if math.isfinite(lo) else ""
    if not kind and residual_fallback and math.isfinite(slope):
        _, lo, hi = residual_interval(lx, ly, level)
        kind = "residual" if math.isfinite(lo) else ""
    return LogLogFit(slope, intercept, r2, float(lo), float(hi), kind, int(ok.sum()),
                     int(n_seeds), len(np.unique(xa[ok])))


@dataclasses.dataclass(frozen=True)
class Decision:
    """A verdict on a one-sided claim ``value ≤ bound`` (or ``< bound``) from an interval.

    ``word``: ``"consistent"``, ``"not consistent"``, ``"inconclusive"`` or ``"not assessed"``;
    ``ok``: True, False, or None for the last two (neither a pass nor a failure);
    ``text``: the reason, with the numbers.
    """

    word: str
    ok: bool | None
    text: str

    def label(self) -> str:
        """``word``, with the reason for ``inconclusive``."""
        return f"{self.word} ({self.text})" if self.word == INCONCLUSIVE else self.word


def _n(v: float) -> str:
    return f"{v:+.2f}"


def decide(value: float, ci: tuple[float, float], *, bound: float, scale: float,
           loose_bound: float | None = None, strict: bool = False) -> Decision:
    """Does the interval ``ci`` of ``value`` decide the claim ``value ≤ bound``?

    * the whole interval satisfies the claim (``high ≤ bound``; ``<`` if ``strict``):
      **consistent**;
    * the whole interval violates it (``low > loose_bound``, default ``bound``): **not
      consistent**;
    * the interval straddles the bound: **consistent** if it is at most ``scale`` wide (the
      value sits at the bound, to within the distance the check must resolve), else
      **inconclusive** — the interval is wider than that distance, so it could not have
      told a value that meets the claim from one that misses it by ``scale``.

    Args:
        value: the estimate.
        ci: its (low, high) interval; non-finite ends → ``not assessed``.
        bound: the claim's bound.
        scale: the distance the check must resolve (≥ 0), e.g. ``|bound|`` for a width
            exponent bound (a bound against a width-independent quantity, exponent 0).
        loose_bound: the most lenient bound when the bound itself is uncertain (e.g. −k·μ
            at the low end of μ's interval); a straddle is measured against it.
        strict: the claim is ``value < bound`` (e.g. "→ 0": exponent < 0).

    Returns:
        A :class:`Decision`.
    """
    lo, hi = (float(v) for v in ci)
    loose = bound if loose_bound is None else float(loose_bound)
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(value)):
        return Decision("not assessed", None, "no confidence interval")
    if (hi < bound) if strict else (hi <= bound):
        return Decision("consistent", True, f"CI [{_n(lo)}, {_n(hi)}] within "
                        f"{'<' if strict else '≤'} {_n(bound)}")
    if (lo >= loose) if strict else (lo > loose):
        return Decision("not consistent", False, f"CI [{_n(lo)}, {_n(hi)}] beyond {_n(loose)}")
    width = hi - lo
    if width <= scale:
        return Decision("consistent", True, f"CI [{_n(lo)}, {_n(hi)}] at the bound {_n(bound)}, "
                        f"{width:.2f} wide ≤ {scale:.2f}")
    return Decision(INCONCLUSIVE, None,
                    f"CI too wide: need more seeds/widths; {value:+.2f} [{_n(lo)}, {_n(hi)}] "
                    f"is {width:.2f} wide, more than the {scale:.2f} it must resolve around "
                    f"{_n(bound)}")


def decide_equal(value: float, ci: tuple[float, float], *, target: float, scale: float
                 ) -> Decision:
    """Does the interval ``ci`` of ``value`` decide whether it equals ``target``?

    **not consistent** when ``target`` lies outside ``ci``; **consistent** when inside and the
    interval is at most ``scale`` wide (the distance the comparison must resolve, e.g. to the
    nearest other value the target could be confused with); **inconclusive** when inside but
    wider; **not assessed** without a finite interval or target.
    """
    lo, hi = (float(v) for v in ci)
    if not all(math.isfinite(v) for v in (lo, hi, value, target)):
        return Decision("not assessed", None, "no confidence interval")
    if not lo <= target <= hi:
        return Decision("not consistent", False, f"{_n(target)} outside [{_n(lo)}, {_n(hi)}]")
    width = hi - lo
    if width <= scale:
        return Decision("consistent", True, f"{_n(target)} in [{_n(lo)}, {_n(hi)}]")
    return Decision(INCONCLUSIVE, None,
                    f"CI too wide: need more seeds/widths; {value:+.2f} [{_n(lo)}, {_n(hi)}] "
                    f"is {width:.2f} wide, more than the {scale:.2f} it must resolve around "
                    f"{_n(target)}")
