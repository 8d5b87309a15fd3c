"""Empirical asymptotic behaviour of a random quantity: power-law exponents of its quantiles.

The paper (Sec. 2, App. B.2, C.3-C.4) describes a random tensor :math:`M = \\{M_n\\}` through
the stochastic big-O notation of its norm. :math:`M = O(f)` (Def. 2.1) iff

.. math:: \\forall g \\text{ s.t. } f = o(g):\\ \\lim_{n\\to\\infty} P(\\|M_n\\| \\le g(n)) = 1,

and the lower bound :math:`f = \\Omega(M)` reverses the inequality with :math:`g = o(f)`.
Every :math:`M` has bounds :math:`O(h_-) \\le O(M) \\le O(h_+)`; when :math:`h_+ \\sim h_-` it has
an *exact* asymptotic behaviour :math:`O(h_+) = O(h_-)` (Sec. 2.1, Lemma C.5). That need not
happen: the paper's variable equal to 1 or :math:`n` with probability 1/2 each has the tight
upper bound :math:`O(n)` and lower bound :math:`O(1)`.

Empirically, at finitely many :math:`n` and finitely many samples, the upper bound is read off
a high quantile of :math:`\\|M_n\\|` and the lower bound off a low one: if the
:math:`q_+`-quantile grows like :math:`n^{a_+}` then :math:`P(\\|M_n\\| \\le g(n)) \\ge q_+` for
every :math:`g \\gg n^{a_+}`, and the paper's bound is the limit :math:`q_+ \\to 1`. Working with
quantiles rather than moments follows App. B.2 and Lemma C.7: moments of products of random
variables pick up factors such as :math:`p!!` (Eq. 35), while quantiles of a positive variable
commute with every increasing map, so the exponent of :math:`\\log Q_q(n)` against
:math:`\\log n` is what the big-O notation sees.

:func:`fit_order` fits those exponents with bootstrap confidence intervals and states whether
the data support an exact behaviour or only a pair of bounds; :func:`quantile_curves` returns
the per-:math:`n` quantiles for plotting.

Only numpy and the standard library are imported here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "MIN_NS",
    "MIN_SAMPLES",
    "OrderFit",
    "QuantileCurves",
    "QuantileFit",
    "Verdict",
    "fit_order",
    "quantile_curves",
]

#: Fewest distinct limiting parameters :func:`fit_order` accepts (a slope and a residual).
MIN_NS = 3
#: Fewest samples per limiting parameter :func:`fit_order` accepts.
MIN_SAMPLES = 5
#: Version of the :meth:`OrderFit.to_dict` layout.
SCHEMA_VERSION = 1
# Bootstrap resamples are drawn in blocks of at most this many values, to bound memory.
_BLOCK_VALUES = 1 << 22


class Verdict(StrEnum):
    """What the quantile exponents say about the asymptotic behaviour (paper Sec. 2.1)."""

    EXACT = "exact"
    """The upper and lower exponents agree: :math:`O(h_+) = O(h_-)`."""
    BOUNDS = "bounds"
    """They differ: only :math:`O(h_-) \\le O(M) \\le O(h_+)` is supported."""


@dataclasses.dataclass(frozen=True)
class QuantileFit:
    """Power law :math:`Q_q(n) \\approx e^{b} n^{a}` fitted to the empirical q-quantiles.

    Attributes:
        q: The quantile level, in (0, 1).
        exponent: Least-squares slope :math:`a` of :math:`\\log Q_q(n)` against :math:`\\log n`.
        ci_low: Lower end of the bootstrap percentile interval for ``exponent``.
        ci_high: Upper end of that interval.
        intercept: Least-squares intercept :math:`b` (natural log).
        r2: Coefficient of determination of the log-log fit; 1.0 when :math:`\\log Q_q(n)`
            does not vary with :math:`n` (the constant fit is then exact).
    """

    q: float
    exponent: float
    ci_low: float
    ci_high: float
    intercept: float
    r2: float

    def to_dict(self) -> dict[str, float]:
        """Return the fields as a JSON-safe dict of floats."""
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantileFit:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: if a field is missing or not a real number.
        """
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                raise ValueError(
                    f"`data` must hold the QuantileFit field {f.name!r}, got keys "
                    f"{sorted(data)}; pass a dict made by `QuantileFit.to_dict()`."
                )
            values[f.name] = _as_float(data[f.name], f"data[{f.name!r}]")
        return cls(**values)


def _overlap(a: QuantileFit, b: QuantileFit) -> bool:
    return max(a.ci_low, b.ci_low) <= min(a.ci_high, b.ci_high)


@dataclasses.dataclass(frozen=True)
class OrderFit:
    """Quantile exponents of a random quantity over its limiting parameter, and a verdict.

    Attributes:
        fits: One :class:`QuantileFit` per quantile level, in increasing ``q``.
        verdict: :attr:`Verdict.EXACT` when the confidence intervals of the lowest and the
            highest quantile exponents overlap, else :attr:`Verdict.BOUNDS` (see
            :func:`fit_order` for the precise rule).
        ns: The limiting parameters, increasing.
        n_samples: Number of samples at each of ``ns``.
        level: Confidence level of the bootstrap intervals.
        n_boot: Number of bootstrap resamples.
    """

    fits: tuple[QuantileFit, ...]
    verdict: Verdict
    ns: tuple[float, ...]
    n_samples: tuple[int, ...]
    level: float
    n_boot: int

    @property
    def upper(self) -> QuantileFit:
        """Fit of the highest quantile: its exponent estimates the upper bound :math:`h_+`."""
        return self.fits[-1]

    @property
    def lower(self) -> QuantileFit:
        """Fit of the lowest quantile: its exponent estimates the lower bound :math:`h_-`."""
        return self.fits[0]

    @property
    def central(self) -> QuantileFit:
        """Fit of the quantile closest to the median (the lower one on a tie)."""
        return min(self.fits, key=lambda f: abs(f.q - 0.5))

    @property
    def exponent(self) -> float | None:
        """The exact exponent (slope of the :attr:`central` quantile), or None for "bounds"."""
        return self.central.exponent if self.verdict is Verdict.EXACT else None

    @property
    def exponent_ci(self) -> tuple[float, float] | None:
        """Bootstrap interval of :attr:`exponent`, or None for "bounds"."""
        if self.verdict is not Verdict.EXACT:
            return None
        return (self.central.ci_low, self.central.ci_high)

    def summary(self) -> str:
        """One line: ``O(n^a [lo, hi]) exact`` or ``O(n^a-) <= O(M) <= O(n^a+) bounds``."""
        if self.verdict is Verdict.EXACT:
            return f"{_power(self.central)} exact"
        return f"{_power(self.lower)} <= O(M) <= {_power(self.upper)} bounds"

    def __str__(self) -> str:
        ns = ", ".join(f"{n:g}" for n in self.ns)
        counts = set(self.n_samples)
        each = f"{counts.pop()} samples each" if len(counts) == 1 else (
            "samples " + ", ".join(str(c) for c in self.n_samples))
        lines = [
            f"n = {ns} ({each}); {self.level:.0%} bootstrap CIs, n_boot={self.n_boot}",
            f"{'q':>6}  {'exponent':>8}  {'CI':<18}  {'R^2':>5}",
        ]
        for f in self.fits:
            ci = f"[{f.ci_low:.2f}, {f.ci_high:.2f}]"
            lines.append(f"{f.q:>6.3g}  {f.exponent:>8.2f}  {ci:<18}  {f.r2:>5.3f}")
        lines.append(self.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (lists, strings, numbers); :meth:`from_dict` inverts it."""
        return {
            "schema_version": SCHEMA_VERSION,
            "verdict": self.verdict.value,
            "ns": list(self.ns),
            "n_samples": list(self.n_samples),
            "level": self.level,
            "n_boot": self.n_boot,
            "fits": [f.to_dict() for f in self.fits],
        }

    def to_json(self, **kwargs: Any) -> str:
        """Serialize :meth:`to_dict` with :func:`json.dumps` (``kwargs`` are passed on)."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OrderFit:
        """Inverse of :meth:`to_dict` (also accepts ``json.loads(fit.to_json())``).

        Raises:
            ValueError: if a key is missing, the schema version is unknown, the verdict is not
                one of "exact", "bounds", or the lengths of ``ns`` and ``n_samples`` differ.
        """
        keys = ("schema_version", "verdict", "ns", "n_samples", "level", "n_boot", "fits")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(
                f"`data` is missing the keys {missing}, got keys {sorted(data)}; "
                "pass a dict made by `OrderFit.to_dict()`."
            )
        if data["schema_version"] != SCHEMA_VERSION:
            raise ValueError(
                f"`data['schema_version']` must be {SCHEMA_VERSION}, got "
                f"{data['schema_version']!r}; refit with this version of weakcorr."
            )
        allowed = [v.value for v in Verdict]
        if data["verdict"] not in allowed:
            raise ValueError(
                f"`data['verdict']` must be one of {allowed}, got {data['verdict']!r}."
            )
        ns = tuple(_as_n(n, "data['ns']") for n in data["ns"])
        n_samples = tuple(int(c) for c in data["n_samples"])
        if len(ns) != len(n_samples):
            raise ValueError(
                f"`data['ns']` and `data['n_samples']` must have equal lengths, got {len(ns)} "
                f"and {len(n_samples)}; pass a dict made by `OrderFit.to_dict()`."
            )
        return cls(
            fits=tuple(QuantileFit.from_dict(f) for f in data["fits"]),
            verdict=Verdict(data["verdict"]),
            ns=ns,
            n_samples=n_samples,
            level=_as_float(data["level"], "data['level']"),
            n_boot=int(data["n_boot"]),
        )


def _power(f: QuantileFit) -> str:
    return f"O(n^{f.exponent:.2f} [{f.ci_low:.2f}, {f.ci_high:.2f}])"


class QuantileCurves(NamedTuple):
    """Empirical quantiles of the samples at each limiting parameter.

    Attributes:
        ns: The limiting parameters, increasing; shape ``(k,)``.
        quantiles: The quantile levels, increasing; shape ``(n_q,)``.
        values: ``values[i, j]`` is the ``quantiles[i]``-quantile of the samples at ``ns[j]``;
            shape ``(n_q, k)``.
    """

    ns: np.ndarray
    quantiles: np.ndarray
    values: np.ndarray


def quantile_curves(
    samples_by_n: Mapping[float, ArrayLike],
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
) -> QuantileCurves:
    """Empirical quantiles :math:`Q_q(n)` of positive samples at each limiting parameter ``n``.

    Quantiles use numpy's default (linear interpolation between order statistics, Hyndman &
    Fan type 7), the same as :func:`fit_order`.

    Args:
        samples_by_n: Maps each limiting parameter ``n > 0`` to a 1-D array-like of positive,
            finite samples (e.g. norms :math:`\\|M_n\\|` over seeds). At least one ``n`` and one
            sample per ``n``.
        quantiles: Quantile levels in (0, 1), distinct; returned sorted.

    Returns:
        A :class:`QuantileCurves` ``(ns, quantiles, values)`` with ``values`` of shape
        ``(len(quantiles), len(samples_by_n))``.

    Raises:
        TypeError: if ``samples_by_n`` is not a mapping or a key is not a real number.
        ValueError: on an empty input, a bad ``n``, samples that are not 1-D, not positive or
            not finite, or quantile levels outside (0, 1) or repeated.

    Example:
        >>> curves = quantile_curves({1: [1.0, 2.0, 3.0], 10: [10.0, 20.0, 30.0]}, (0.5,))
        >>> curves.values.tolist()
        [[2.0, 20.0]]
    """
    ns, samples = _check_samples(samples_by_n, min_ns=1, min_samples=1)
    qs = _check_quantiles(quantiles, min_count=1)
    values = np.stack([np.quantile(s, qs) for s in samples], axis=1)
    return QuantileCurves(np.asarray(ns, dtype=float), qs, values)


def fit_order(
    samples_by_n: Mapping[float, ArrayLike],
    *,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
    n_boot: int = 1000,
    level: float = 0.95,
    generator: np.random.Generator | int | None = None,
) -> OrderFit:
    """Fit the power-law exponents of a random quantity's quantiles over its limiting parameter.

    For each level :math:`q` the empirical quantile :math:`Q_q(n)` is taken at every ``n``
    (:func:`quantile_curves`), and :math:`\\log Q_q(n) = b + a \\log n` is fitted by least
    squares. The exponent's confidence interval is a percentile bootstrap: the samples at each
    ``n`` are resampled with replacement (independently across ``n``), the quantiles and the
    slope are recomputed, and the interval runs between the :math:`(1 \\mp \\text{level})/2`
    quantiles of the ``n_boot`` slopes.

    The highest level's exponent estimates the upper bound :math:`O(M) \\le O(n^{a_+})` and the
    lowest level's the lower bound :math:`O(n^{a_-}) \\le O(M)` (Def. 2.1, Lemma C.7; the
    paper's bounds are the limits :math:`q \\to 1` and :math:`q \\to 0`). The verdict rule:

    * ``"exact"`` iff the two intervals intersect,
      :math:`\\max(\\text{lo}_-, \\text{lo}_+) \\le \\min(\\text{hi}_-, \\text{hi}_+)` (closed
      intervals, so touching counts). The data are then consistent with
      :math:`O(h_+) = O(h_-)` (Sec. 2.1, Lemma C.5), and the exact exponent is that of the
      level closest to 0.5 (:attr:`OrderFit.exponent`, with its interval).
    * ``"bounds"`` otherwise: only :math:`O(n^{a_-}) \\le O(M) \\le O(n^{a_+})` is reported,
      as for the paper's variable equal to 1 or :math:`n` with probability 1/2 each.

    Overlap of two intervals at ``level`` is a lenient test of equal exponents (it declares
    "bounds" less often than a ``1 - level`` test of the difference would), so "exact" means
    "no evidence of different upper and lower growth at these ``n``", not a proof.

    Args:
        samples_by_n: Maps each limiting parameter ``n > 0`` (e.g. a width) to a 1-D
            array-like of positive, finite samples of the quantity (e.g. :math:`\\|M_n\\|` over
            seeds). At least :data:`MIN_NS` distinct ``n`` and :data:`MIN_SAMPLES` samples each.
        quantiles: At least two distinct quantile levels in (0, 1).
        n_boot: Number of bootstrap resamples; at least :math:`2/(1-\\text{level})`, so that
            each tail of the percentile interval rests on two or more resamples.
        level: Confidence level of the intervals, in (0, 1).
        generator: A numpy ``Generator`` or an int seed for the bootstrap; the same seed gives
            the same result. None draws fresh entropy.

    Returns:
        An :class:`OrderFit` with one :class:`QuantileFit` per level (increasing ``q``), the
        verdict, and the exponents as :attr:`OrderFit.exponent` (``None`` for "bounds"),
        :attr:`OrderFit.upper` and :attr:`OrderFit.lower`.

    Raises:
        TypeError: if ``samples_by_n`` is not a mapping, a key is not a real number, or
            ``generator`` is neither a numpy Generator, an int nor None.
        ValueError: on fewer than :data:`MIN_NS` values of ``n``, fewer than
            :data:`MIN_SAMPLES` samples at some ``n``, samples that are not 1-D, positive and
            finite (the message names the ``n``), or bad ``quantiles``, ``n_boot`` or ``level``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> ns = (16, 64, 256, 1024)
        >>> samples = {n: np.abs(rng.standard_normal(200)) / np.sqrt(n) for n in ns}
        >>> fit = fit_order(samples, generator=0)
        >>> fit.verdict
        <Verdict.EXACT: 'exact'>
        >>> lo, hi = fit.exponent_ci
        >>> bool(lo <= -0.5 <= hi)
        True
    """
    ns, samples = _check_samples(samples_by_n, min_ns=MIN_NS, min_samples=MIN_SAMPLES)
    qs = _check_quantiles(quantiles, min_count=2)
    level = _check_level(level)
    n_boot = _check_n_boot(n_boot, level)
    rng = _check_generator(generator)

    log_n = np.log(np.asarray(ns, dtype=float))
    log_q = np.log(np.stack([np.quantile(s, qs) for s in samples], axis=-1))  # (n_q, k)
    slope, intercept, r2 = _fit_lines(log_n, log_q)

    boot = np.empty((len(qs), n_boot, len(ns)))
    for j, s in enumerate(samples):
        boot[:, :, j] = _bootstrap_quantiles(s, qs, n_boot, rng)
    boot_slope, _, _ = _fit_lines(log_n, np.log(boot))  # (n_q, n_boot)
    alpha = (1.0 - level) / 2.0
    ci = np.quantile(boot_slope, [alpha, 1.0 - alpha], axis=-1)  # (2, n_q)

    fits = tuple(
        QuantileFit(
            q=float(qs[i]),
            exponent=float(slope[i]),
            ci_low=float(ci[0, i]),
            ci_high=float(ci[1, i]),
            intercept=float(intercept[i]),
            r2=float(r2[i]),
        )
        for i in range(len(qs))
    )
    verdict = Verdict.EXACT if _overlap(fits[0], fits[-1]) else Verdict.BOUNDS
    return OrderFit(
        fits=fits,
        verdict=verdict,
        ns=tuple(ns),
        n_samples=tuple(len(s) for s in samples),
        level=level,
        n_boot=n_boot,
    )


def _fit_lines(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares lines of ``y[..., :]`` against ``x``: slope, intercept, R^2, each y[..., 0]."""
    xc = x - x.mean()
    y_mean = y.mean(axis=-1, keepdims=True)
    yc = y - y_mean
    slope = yc @ xc / (xc @ xc)
    intercept = y_mean[..., 0] - slope * x.mean()
    ss_res = np.sum((yc - slope[..., None] * xc) ** 2, axis=-1)
    ss_tot = np.sum(yc**2, axis=-1)
    flat = np.ptp(y, axis=-1) == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(flat, 1.0, 1.0 - ss_res / np.where(flat, 1.0, ss_tot))
    return slope, intercept, r2


def _bootstrap_quantiles(
    s: np.ndarray, qs: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Quantiles ``qs`` of ``n_boot`` resamples of ``s`` with replacement; shape (n_q, n_boot)."""
    m = len(s)
    out = np.empty((len(qs), n_boot))
    block = max(1, _BLOCK_VALUES // m)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, m, size=(stop - start, m))
        out[:, start:stop] = np.quantile(s[idx], qs, axis=1)
    return out


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a real number, got {value!r}.")
    return float(value)


def _as_n(n: Any, name: str) -> float:
    """A limiting parameter: a positive finite real, kept an int when it is one."""
    if isinstance(n, bool) or not isinstance(n, numbers.Real):
        raise TypeError(
            f"`{name}` keys must be real numbers (the limiting parameter n), got {n!r} of type "
            f"{type(n).__name__}; key the samples by n, e.g. {{64: norms_64, 128: norms_128}}."
        )
    value = int(n) if isinstance(n, numbers.Integral) else float(n)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"`{name}` keys must be positive and finite (exponents are fitted against log n), "
            f"got n={n!r}; drop that entry or re-index n from 1."
        )
    return value


def _check_samples(
    samples_by_n: Mapping[float, ArrayLike], *, min_ns: int, min_samples: int
) -> tuple[list[float], list[np.ndarray]]:
    """Validate the samples; return the ns (increasing) and float64 sample arrays."""
    if not isinstance(samples_by_n, Mapping):
        raise TypeError(
            "`samples_by_n` must be a mapping n -> 1-D samples, got "
            f"{type(samples_by_n).__name__}; build one with dict(zip(ns, samples))."
        )
    if len(samples_by_n) < min_ns:
        raise ValueError(
            f"`samples_by_n` must hold at least {min_ns} distinct values of n, got "
            f"{len(samples_by_n)} ({sorted(samples_by_n)!r}); add samples at more n."
        )
    items = sorted(
        ((_as_n(n, "samples_by_n"), v) for n, v in samples_by_n.items()), key=lambda t: t[0]
    )
    ns: list[float] = []
    arrays: list[np.ndarray] = []
    for n, value in items:
        try:
            s = np.asarray(value, dtype=float)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"`samples_by_n[{n!r}]` must be a 1-D array-like of numbers, got "
                f"{type(value).__name__}: {err}."
            ) from err
        if s.ndim != 1:
            raise ValueError(
                f"`samples_by_n[{n!r}]` must be 1-D, got shape {s.shape}; flatten it or pass "
                "one scalar summary (e.g. a norm) per sample."
            )
        if len(s) < min_samples:
            raise ValueError(
                f"`samples_by_n[{n!r}]` must hold at least {min_samples} samples, got {len(s)}; "
                "draw more seeds at that n."
            )
        bad = ~(np.isfinite(s) & (s > 0))
        if bad.any():
            raise ValueError(
                f"`samples_by_n[{n!r}]` must be positive and finite, got {int(bad.sum())} bad "
                f"value(s), e.g. {float(s[bad][0])!r}; pass norms or absolute values, and drop "
                "diverged runs."
            )
        ns.append(n)
        arrays.append(s)
    return ns, arrays


def _check_quantiles(quantiles: Sequence[float], *, min_count: int) -> np.ndarray:
    try:
        qs = np.asarray(quantiles, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"`quantiles` must be a sequence of levels in (0, 1), got {quantiles!r}."
        ) from err
    if qs.ndim != 1 or len(qs) < min_count:
        raise ValueError(
            f"`quantiles` must be a 1-D sequence of at least {min_count} level(s), got "
            f"{quantiles!r}; e.g. (0.05, 0.5, 0.95)."
        )
    if not np.all((qs > 0) & (qs < 1)):
        raise ValueError(
            f"`quantiles` must lie strictly between 0 and 1, got {quantiles!r}; the sample "
            "minimum and maximum do not estimate a bound, use e.g. (0.05, 0.95)."
        )
    qs = np.sort(qs)
    if np.any(np.diff(qs) == 0):
        raise ValueError(f"`quantiles` must be distinct, got {quantiles!r}.")
    return qs


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise ValueError(f"`level` must be a number in (0, 1), got {level!r}; e.g. 0.95.")
    return float(level)


def _check_n_boot(n_boot: int, level: float) -> int:
    least = math.ceil(2.0 / (1.0 - level) - 1e-9)
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < least:
        raise ValueError(
            f"`n_boot` must be an int >= {least} for level={level:g} (two resamples in each "
            f"tail of the interval), got {n_boot!r}; the default 1000 suits level <= 0.998."
        )
    return int(n_boot)


def _check_generator(generator: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is None:
        return np.random.default_rng()
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        if generator < 0:
            raise ValueError(
                f"`generator` as an int seed must be >= 0, got {generator}; e.g. generator=0."
            )
        return np.random.default_rng(int(generator))
    raise TypeError(
        "`generator` must be a numpy Generator, an int seed or None, got "
        f"{type(generator).__name__}; e.g. generator=0 or np.random.default_rng(0)."
    )
