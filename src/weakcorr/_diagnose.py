"""``weakcorr.diagnose``: does a model family linearize as Theorems 3.1 / 3.2 and Cor. 4.1 say?

For every width n and seed, :func:`diagnose` builds a model, measures at initialisation the
exact C^{0,2} and C^{0,3} (Eq. 11, root mean square of the diagonal over inputs and outputs as
in Eq. 25), the subordinate norm of C^{1,1} (Eq. 1; max over an equal-input and a
distinct-input tuple, Def. D.1) and the Hessian/gradient ratio, all with the training learning
rate η(n) = lr · n^lr_exponent; then trains f beside f_lin (:func:`weakcorr.train.paired_sgd`)
for S steps and records the RMS deviation √MSE_test (the root of Eq. 30) at the end and along
training. :func:`analyze` turns these measurements into exponents and verdicts:

* the error exponent e: RMS(F − F_lin) ~ n^e gives m(n) ~ n^μ with μ = −e (Eq. 15, 18);
* the exponents of C^{0,2}, C^{0,3}, C^{1,1} and the ratio (:func:`weakcorr.asymptotics.fit_order`
  over seeds at each width: quantile exponents with bootstrap CIs);
* Theorem 3.1 (Eq. 14): C^{0,d} = O(1/m), C^{D,d} = O(1/√m) ⇔ exponents ≤ −μ, ≤ −μ/2;
* Theorem 3.2 (Eq. 17): C^{D,d} = O(m^{-d/2}) ⇔ C^{0,2} ≤ −μ, C^{0,3} ≤ −3μ/2, C^{1,1} ≤ −μ/2;
* Cor. 4.1 (Eq. 22): the deviation is flat in the step s — log-log slope of the deviation
  against s over the later half of training at the largest width, with a CI over seeds;
* Eq. 18 (optional ``r``): training again with η(n)·r(n) should move the error exponent by at
  most the exponent of r.
* the infinite width (weakcorr MLPs, :mod:`weakcorr.limits`): ‖Θ_n − Θ∞‖_F/‖Θ∞‖_F on the
  correlation inputs, Θ∞ at the model's widths (expected n^-1/2); and for MSE whether η(n)
  is below the critical lr B·d_y/λ_max(Θ) (:func:`weakcorr.ntk.spectrum`) at each width;
  for full-batch MSE with N·d_y <= 2048, the test distance of F_lin after S steps with Θ0
  from F_lin with Θ∞ (:func:`weakcorr._limits.flin_distance`), fitted against width;
* per layer (any model, first seed of each width, 4 inputs): each parameter group's share of
  C^{0,1} and the RMS of its C^{0,2} terms and of the mixed-group ones
  (:func:`weakcorr.correlations.by_group`), a table in the report.

Bounds use the highest quantile's exponent (the stochastic O of Def. 2.1 is an upper bound).
A comparison (:func:`weakcorr.fits.decide`) is "not consistent" when the exponent's CI lies
beyond the loosest bound, "consistent" when it lies within the bound or straddles it while no
wider than the distance the check must resolve (|k·μ| for a bound −k·μ, the distance to a
width-independent quantity; 1 for Cor. 4.1, flat against growing like s), and "inconclusive
(CI too wide: need more seeds/widths)" otherwise; a claim "→ 0" or "decreases" needs the whole
CI below 0. Finitely many widths cannot prove an asymptotic statement, only fail to contradict
it. A quantity without a
fit (too few samples, no CI) is "not assessed" and never counts as a pass: a theorem whose
quantities were all unassessed is "not assessed", one with some unassessed is "consistent on
what was assessed (k of m not assessed)" (:func:`combine_checks`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from . import _a1, _factory, _limits, _torchdata
from ._files import check_writable_dir
from . import correlations as C
from .asymptotics import MIN_NS, MIN_SAMPLES, fit_order
from .fits import INCONCLUSIVE, decide, loglog_slope, mean_interval
from .functional import functional
from ._per_layer import summary as layer_summary
from .ntk import spectrum as ntk_spectrum
from .train import paired_sgd

__all__ = ["DiagnoseResult", "Exponent", "Measurement", "Verdict", "analyze", "bound_verdict",
           "check_writable_dir", "combine_checks", "diagnose", "fit_exponent", "late_slope"]

QUANTITIES = ("c02", "c03", "c11", "hg_ratio")
#: The distance Cor. 4.1's check resolves: a flat deviation (slope 0 in log s) against one
#: growing like s (slope 1).
COR41_SCALE = 1.0
LABELS = {"error": "RMS(F − F_lin) after S steps", "c02": "C^{0,2}", "c03": "C^{0,3}",
          "c11": "‖C^{1,1}‖", "hg_ratio": "‖∇²f‖/‖∇f‖", "error_r": "RMS(F − F_lin) with lr·r(n)",
          "c2_exact": "C^{0,2}", "c3_exact": "C^{0,3}", "c11_same": "‖C^{1,1}‖",
          "kernel_distance": "‖Θ_n − Θ∞‖_F/‖Θ∞‖_F",
          "flin_distance": "RMS(F_lin^Θ0 − F_lin^Θ∞)/RMS(F_lin^Θ∞ − F0) after S steps"}
#: Training inputs on which the critical lr B·d_y/λ_max is estimated (at most).
CRITICAL_LR_INPUTS = 256


@dataclasses.dataclass
class Measurement:
    """What one (width, seed) gave. Correlations may be exactly 0 (a model linear in θ)."""

    width: int
    seed: int
    lr: float
    c02: float | None = None
    c03: float | None = None
    c11: float | None = None
    hg_ratio: float | None = None
    kernel_distance: float | None = None  # ‖Θ_n − Θ∞‖_F/‖Θ∞‖_F (weakcorr MLPs, _limits)
    critical_lr: float | None = None      # B·d_y/λ_max of Θ (first seed of each width)
    flin_distance: float | None = None    # F_lin with Θ0 against Θ∞ after S steps (full batch)
    by_layer: dict[str, Any] | None = None  # _per_layer.summary on 4 inputs (first seed)
    error: float | None = None
    error_r: float | None = None
    output_rms: float = 1.0
    eps: float = float(torch.finfo(torch.float32).eps)
    curve: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    curve_r: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    status: str = "ok"


@dataclasses.dataclass(frozen=True)
class Exponent:
    """The width exponent of one quantity.

    ``status``: ``fit`` (exponents below are set), ``zero`` (identically zero at every width:
    every bound O(n^k) holds), ``rounding`` (at float rounding level: not measurable),
    ``insufficient`` (fewer than 3 widths with 5 positive samples each), ``no_ci`` (a slope
    without a confidence interval, e.g. one seed at two widths: not enough to test a bound;
    ``note`` says what is missing), or ``missing`` (not measured at all). ``upper`` is the
    highest quantile's exponent and CI (used for bounds), ``central`` the median's.
    """

    name: str
    status: str
    central: tuple[float, float, float] | None = None
    upper: tuple[float, float, float] | None = None
    shape: str | None = None
    note: str = ""

    def text(self) -> str:
        if self.status != "fit":
            return {"zero": "identically 0", "rounding": "at rounding level",
                    "insufficient": "too few positive samples",
                    "no_ci": "no confidence interval", "missing": "not measured"}[self.status]
        e, lo, hi = self.upper
        c = self.central
        return (f"n^{e:+.2f} [{lo:+.2f}, {hi:+.2f}] (q95; median n^{c[0]:+.2f} "
                f"[{c[1]:+.2f}, {c[2]:+.2f}], {self.shape})")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One statement of the paper checked against the measurements."""

    claim: str
    # "consistent" | "not consistent" | "not assessed" |
    # "consistent on what was assessed (k of m not assessed)"
    verdict: str
    detail: str

    def line(self) -> str:
        head, sep, tail = self.verdict.partition(" (")
        return f"{self.claim}: {head.upper()}{sep}{tail} at the measured widths — {self.detail}"


@dataclasses.dataclass
class DiagnoseResult:
    """Measurements, exponents and verdicts of :func:`diagnose` / :func:`analyze`."""

    measurements: list[Measurement]
    exponents: dict[str, Exponent]
    mu: tuple[float, float, float] | None
    deviation_slopes: dict[int, tuple[float, float, float]]
    verdicts: list[Verdict]
    settings: dict[str, Any]

    def lines(self) -> list[str]:
        """The verdict lines, one per claim."""
        return [v.line() for v in self.verdicts]

    def problem_runs(self) -> list[str]:
        """One line per (width, seed) that did not train to the end, named by its status
        (``diverged``: the loss or f − f_lin became non-finite; left out of the error and
        deviation fits, while its correlations at initialisation are kept)."""
        return [f"n = {m.width}, seed {m.seed}: {m.status} (lr {m.lr:.4g})"
                for m in self.measurements if m.status != "ok"]

    def write_report(self, out_dir: str | Any) -> dict[str, Any]:
        """Write ``diagnose.md``, ``diagnose.json`` and ``figures/`` (scaling with width,
        deviation vs step; PNG + PDF) into ``out_dir`` (created): :func:`write_report`."""
        return write_report(self, out_dir)

    def to_dict(self) -> dict[str, Any]:
        from .results import json_safe

        return json_safe({
            "settings": self.settings,
            "m_exponent": self.mu,
            "exponents": {k: dataclasses.asdict(v) for k, v in self.exponents.items()},
            "deviation_slopes": {str(k): v for k, v in self.deviation_slopes.items()},
            "verdicts": [dataclasses.asdict(v) for v in self.verdicts],
            "measurements": [dataclasses.asdict(m) for m in self.measurements],
        })


# ----------------------------------------------------------------------------- fitting


def fit_exponent(name: str, samples_by_width: Mapping[int, Sequence[float | None]], *,
                 floor: float = 0.0, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> Exponent:
    """Quantile exponents of ``name`` against width (:func:`weakcorr.asymptotics.fit_order`).

    Values that are None or non-finite are dropped. All values ``== 0`` → ``zero``; all
    ``<= floor`` → ``rounding``; otherwise the positive values are fitted when every width keeps
    at least 5 and there are at least 3 widths (``insufficient`` else).
    """
    clean = {w: np.array([v for v in vals if v is not None and math.isfinite(v)], dtype=float)
             for w, vals in samples_by_width.items()}
    allv = np.concatenate([v for v in clean.values()]) if clean else np.zeros(0)
    if allv.size and np.all(allv == 0):
        return Exponent(name, "zero", note="every sample is exactly 0")
    if allv.size and np.all(np.abs(allv) <= floor):
        return Exponent(name, "rounding", note=f"every sample <= {floor:.2g} (float rounding)")
    pos = {w: np.abs(v[v != 0]) for w, v in clean.items()}
    pos = {w: v for w, v in pos.items() if len(v) >= MIN_SAMPLES}
    if len(pos) < MIN_NS:
        return Exponent(name, "insufficient",
                        note=f"{len(pos)} widths with >= {MIN_SAMPLES} positive samples")
    fit = fit_order(pos, n_boot=n_boot, level=level, generator=seed)
    dropped = sum(len(v) for v in clean.values()) - sum(len(v) for v in pos.values())
    c, u = fit.central, fit.upper
    return Exponent(name, "fit", (c.exponent, c.ci_low, c.ci_high),
                    (u.exponent, u.ci_low, u.ci_high), fit.verdict.value,
                    note=f"{dropped} zero/non-finite samples dropped" if dropped else "")


def bound_verdict(exp: Exponent, k: float, mu: tuple[float, float, float]
                  ) -> tuple[bool | str | None, str]:
    """Is ``exp`` ≤ −k·μ, as far as the CIs can tell? Returns (check, text).

    ``check`` is True (the exponent's CI lies below the bound, or straddles it while at most
    |k·μ| wide), False (the CI lies above the loosest bound −k·μ_low), ``"inconclusive"``
    (the CI straddles the bound and is wider than |k·μ|, the distance between the bound and a
    width-independent quantity: :func:`weakcorr.fits.decide`), or None when ``exp`` has no fit
    (``insufficient``, ``rounding``, ``no_ci``, ``missing``): not assessed. Neither of the last
    two is a pass or a failure (see :func:`combine_checks`).
    """
    label = LABELS.get(exp.name, exp.name)
    if exp.status == "zero":
        return True, f"{label} ≡ 0"
    if exp.status != "fit":
        why = f"; {exp.note}" if exp.note else ""
        return None, f"{label} {exp.text()} (not assessed{why})"
    e, lo, hi = exp.upper
    need, need_hi = -k * mu[0], -k * mu[1]  # the loosest bound uses μ's lower end
    d = decide(e, (lo, hi), bound=need, scale=abs(need), loose_bound=need_hi)
    head = f"{label} ~ n^{e:+.2f} [{lo:+.2f}, {hi:+.2f}] vs ≤ {need:+.2f} (loosest {need_hi:+.2f})"
    if d.word == INCONCLUSIVE:
        return INCONCLUSIVE, f"{head} ? inconclusive ({d.text})"
    return d.ok, f"{head} " + ("✓" if d.ok else "✗")


def combine_checks(checks: Sequence[bool | str | None], *,
                   negative: str = "not consistent") -> str:
    """One verdict from per-quantity checks (True pass, False fail, ``"inconclusive"``, None
    not assessed).

    Any failure: ``negative``. Else any inconclusive: ``"inconclusive (CI too wide: need more
    seeds/widths; k of m checks)"``. None assessed: ``"not assessed"``. Some not assessed and
    the rest passing: ``"consistent on what was assessed (k of m not assessed)"``. All passing:
    ``"consistent"``. Unassessed and inconclusive checks never count as passes.
    """
    checks = list(checks)
    missing = sum(ok is None for ok in checks)
    undecided = sum(ok == INCONCLUSIVE for ok in checks)
    if any(ok is False for ok in checks):
        return negative
    if undecided:
        return (f"inconclusive (CI too wide: need more seeds/widths; {undecided} of "
                f"{len(checks)} checks)")
    if not checks or missing == len(checks):
        return "not assessed"
    if missing:
        return f"consistent on what was assessed ({missing} of {len(checks)} not assessed)"
    return "consistent"


def late_slope(curve: Sequence[tuple[int, float]], *, start_fraction: float = 0.5) -> float:
    """Least-squares slope of log deviation against log step over the later part of a curve."""
    pts = [(s, d) for s, d in curve if s > 0 and d is not None and d > 0 and math.isfinite(d)]
    if not pts:
        return math.nan
    last = max(s for s, _ in pts)
    pts = [(s, d) for s, d in pts if s >= start_fraction * last]
    if len(pts) < 3:
        return math.nan
    return loglog_slope([s for s, _ in pts], [d for _, d in pts])


def analyze(measurements: Sequence[Measurement], *, r_exponent: float | None = None,
            level: float = 0.95, n_boot: int = 1000, seed: int = 0,
            settings: Mapping[str, Any] | None = None) -> DiagnoseResult:
    """Exponents and verdicts from measurements (see the module docstring).

    Args:
        measurements: one per (width, seed); at least 3 widths with 5 seeds each for exponents.
        r_exponent: the log-log slope of r(n) over the widths, when ``error_r`` was measured.
        level: confidence level of every interval.
        n_boot: bootstrap resamples of :func:`weakcorr.asymptotics.fit_order`.
        seed: bootstrap seed.
        settings: recorded in the result.

    Returns:
        A :class:`DiagnoseResult`.
    """
    ms = [m for m in measurements if m.status == "ok"]
    widths = sorted({m.width for m in ms})
    bad = [m for m in measurements if m.status != "ok"]
    bad_note = ""
    if bad:
        by = {}
        for m in bad:
            by.setdefault(m.status, []).append(f"n={m.width}/seed {m.seed}")
        bad_note = ("; " + "; ".join(f"{len(v)} of {len(measurements)} runs {k} ("
                                     + ", ".join(v[:6]) + (", ..." if len(v) > 6 else "") + ")"
                                     for k, v in by.items())
                    + ", left out of the error fit (diverged runs keep their correlations at "
                      "initialisation)")

    def by_width(attr: str, runs: Sequence[Measurement] = ms) -> dict[int, list[float | None]]:
        ws = sorted({m.width for m in runs})
        return {w: [getattr(m, attr) for m in runs if m.width == w] for w in ws}

    # The correlations are measured at initialisation, before training: a run that diverged
    # later still measured them (as the A.1 report counts them); the error needs a finished run.
    at_init = [m for m in measurements if m.status in ("ok", "diverged")]
    floor = max((64 * m.eps * max(m.output_rms, 1e-30) for m in ms), default=0.0)
    exps = {q: fit_exponent(q, by_width(q, at_init), n_boot=n_boot, level=level, seed=seed)
            for q in QUANTITIES}
    exps["error"] = fit_exponent("error", by_width("error"), floor=floor, n_boot=n_boot,
                                 level=level, seed=seed)
    if r_exponent is not None:
        exps["error_r"] = fit_exponent("error_r", by_width("error_r"), floor=floor,
                                       n_boot=n_boot, level=level, seed=seed)
    if any(m.kernel_distance is not None for m in at_init):
        exps["kernel_distance"] = fit_exponent("kernel_distance", by_width("kernel_distance",
                                               at_init), n_boot=n_boot, level=level, seed=seed)
    if any(m.flin_distance is not None for m in at_init):
        exps["flin_distance"] = fit_exponent("flin_distance", by_width("flin_distance",
                                             at_init), n_boot=n_boot, level=level, seed=seed)
    span = f"n = {widths[0]}–{widths[-1]}" if widths else "no widths"
    verdicts: list[Verdict] = []
    err = exps["error"]
    mu = None
    if err.status == "fit":
        e, lo, hi = err.upper
        mu = (-e, -hi, -lo)
        dec = decide(e, (lo, hi), bound=0.0, scale=0.0, strict=True)  # decreasing in n
        verdicts.append(Verdict(
            "Linearization (Eq. 15: F − F_lin = O(1/m(n)))", dec.label(),
            f"RMS(F − F_lin) ~ n^{e:+.2f} [{lo:+.2f}, {hi:+.2f}] over {span}, so m(n) ~ "
            f"n^{mu[0]:.2f} [{mu[1]:.2f}, {mu[2]:.2f}]"
            + ("; the error does not decrease with width" if dec.ok is False else "")
            + bad_note))
    else:
        verdicts.append(Verdict("Linearization (Eq. 15: F − F_lin = O(1/m(n)))",
                                "consistent" if err.status in ("zero", "rounding") else
                                "not assessed",
                                f"RMS(F − F_lin) {err.text()}: "
                                + ("f = f_lin to float precision, the model is linear in θ; "
                                   "m(n) is unbounded, not measurable"
                                   if err.status in ("zero", "rounding") else err.note)
                                + bad_note))
    corr = [exps[q] for q in ("c02", "c03", "c11")]
    if mu is not None and mu[2] > 0:
        for claim, ks in (("Theorem 3.1 (Eq. 14: C^d = O(1/m), C^{D,d} = O(1/√m))",
                           (1.0, 1.0, 0.5)),
                          ("Theorem 3.2 (Eq. 17: C^{D,d} = O(1/√m)^d)", (1.0, 1.5, 0.5))):
            checks = [bound_verdict(x, k, mu) for x, k in zip(corr, ks)]
            verdicts.append(Verdict(claim, combine_checks([ok for ok, _ in checks]),
                                    "; ".join(t for _, t in checks)))
    elif all(x.status == "zero" for x in corr):
        for claim in ("Theorem 3.1 (Eq. 14)", "Theorem 3.2 (Eq. 17)"):
            verdicts.append(Verdict(claim, "consistent", "every correlation C^{0,2}, C^{0,3}, "
                                    "C^{1,1} is identically 0 (the model is linear in θ)"))
    else:
        verdicts.append(Verdict("Theorems 3.1 / 3.2 (Eq. 14, 17)", "not assessed",
                                "no decreasing linearization error to estimate m(n) from; "
                                "exponents: " + "; ".join(f"{LABELS[x.name]} {x.text()}"
                                                          for x in corr)))
    hg = exps["hg_ratio"]
    if hg.status == "fit":
        dec = decide(hg.upper[0], hg.upper[1:], bound=0.0, scale=0.0, strict=True)
        verdicts.append(Verdict("Hessian/gradient ratio → 0 (Liu et al. 2020)", dec.label(),
                                f"ratio ~ {hg.text()}"))
    # Cor. 4.1: deviation flat in s, per width (mean over seeds of per-seed late slopes).
    dev_slopes: dict[int, tuple[float, float, float]] = {}
    for w in widths:
        dev_slopes[w] = mean_interval([late_slope(m.curve) for m in ms if m.width == w], level)
    if widths and err.status == "fit" and math.isfinite(dev_slopes[widths[-1]][0]):
        s, lo, hi = dev_slopes[widths[-1]]
        # Flat (s^0) against growing like s: a CI over 1 wide cannot tell the two apart.
        dec = decide(s, (lo, hi), bound=0.0, scale=COR41_SCALE)
        others = ", ".join(f"n={w}: {dev_slopes[w][0]:+.2f}" for w in widths[:-1])
        shape = {True: "flat or decreasing", False: "still growing"}.get(dec.ok, "undecided")
        verdicts.append(Verdict(
            "Corollary 4.1 (Eq. 22: F − F_lin = O(s^0/m), flat in the step s)", dec.label(),
            f"d log dev / d log s over the later half of training at n = {widths[-1]}: "
            f"{s:+.2f} [{lo:+.2f}, {hi:+.2f}] ({shape}); smaller widths: {others or '–'}"))
    else:
        verdicts.append(Verdict("Corollary 4.1 (Eq. 22)", "not assessed",
                                "no measurable deviation curve (too few logged steps, or the "
                                "deviation is at rounding level)"))
    if r_exponent is not None:
        er = exps["error_r"]
        if err.status == "fit" and er.status == "fit":
            d = er.upper[0] - err.upper[0]
            d_lo, d_hi = er.upper[1] - err.upper[2], er.upper[2] - err.upper[1]
            dec = decide(d, (d_lo, d_hi), bound=r_exponent, scale=abs(r_exponent))
            verdicts.append(Verdict(
                "Eq. 18 (lr → r(n)·lr: error O(r(n)/m(n)))", dec.label(),
                f"r(n) ~ n^{r_exponent:+.2f}; error exponent {err.upper[0]:+.2f} → "
                f"{er.upper[0]:+.2f}, shift {d:+.2f} [{d_lo:+.2f}, {d_hi:+.2f}] vs ≤ "
                f"{r_exponent:+.2f}" + (" (the shift matches r)" if d_lo <= r_exponent <= d_hi
                                        else "")))
        else:
            verdicts.append(Verdict("Eq. 18", "not assessed",
                                    f"error {err.text()}, with r(n): {er.text()}"))
    verdicts += _kernel_verdicts(exps, ms)
    return DiagnoseResult(list(measurements), exps, mu, dev_slopes, verdicts,
                          dict(settings or {}))


def _kernel_verdicts(exps: Mapping[str, Exponent], ms: Sequence[Measurement]) -> list[Verdict]:
    """The infinite-width checks (issue 17): kernel convergence and lr against 2/λ_max."""
    out = []
    kd = exps.get("kernel_distance")
    if kd is not None:
        c = kd.central
        if kd.status == "fit" and c is not None:
            # Θ_n − Θ∞ = O(n^-1/2): the median exponent against −1/2, resolved to 1/2.
            dec = decide(c[0], c[1:], bound=-0.5, scale=0.5, loose_bound=-0.25)
            u = kd.upper
            label, detail = dec.label(), (f"median n^{c[0]:+.2f} [{c[1]:+.2f}, {c[2]:+.2f}], "
                                          f"expected n^-1/2; q95 n^{u[0]:+.2f} "
                                          f"[{u[1]:+.2f}, {u[2]:+.2f}]" if u else "")
        else:
            label, detail = "not assessed", f"{kd.text()} {kd.note}".strip()
        out.append(Verdict("NTK → Θ∞ (‖Θ_n − Θ∞‖_F/‖Θ∞‖_F = O(n^-1/2))", label, detail))
    crit = {m.width: (m.lr, m.critical_lr) for m in ms if m.critical_lr is not None}
    if crit:
        above = [w for w, (lr, c) in crit.items() if lr >= c]
        parts = ", ".join(f"n={w}: lr/lr_crit = {lr / c:.3g}" for w, (lr, c) in sorted(crit.items()))
        out.append(Verdict(
            "Stability (lr below the critical lr B·d_y/λ_max(Θ) of GD on the MSE, App. F)",
            "not consistent" if above else "consistent",
            parts + (f"; above at n = {above}" if above else "")
            + f" (Θ on the first B = min(batch size, {CRITICAL_LR_INPUTS}) training inputs, "
              "first seed; λ_max by Lanczos, weakcorr.ntk.spectrum)"))
    return out


def _layer_lines(result: DiagnoseResult) -> list[str]:
    """Markdown: each parameter group's share of C^{0,1} and RMS of C^{0,2} per width."""
    rows = sorted((m.width, m.by_layer) for m in result.measurements if m.by_layer)
    if not rows:
        return []
    groups = list(rows[-1][1]["c02_rms"])
    widths = [w for w, _ in rows]
    out = ["", "## Per layer (C^{0,1} share / RMS of C^{0,2}; first seed, 4 inputs)", "",
           "| group | " + " | ".join(f"n = {w}" for w in widths) + " | C^{0,2} slope |",
           "|---|" + "---|" * (len(widths) + 1)]
    for g in groups:
        cells = []
        for _, b in rows:
            share = b["c01_share"].get(g)
            c2 = b["c02_rms"].get(g, math.nan)
            cells.append((f"{100 * share:.0f} % / " if share is not None else "") + f"{c2:.2e}")
        slope = loglog_slope(widths, [b["c02_rms"].get(g, math.nan) for _, b in rows])
        slope_text = f"{slope:+.2f}" if math.isfinite(slope) else "–"
        out.append(f"| {g} | " + " | ".join(cells) + f" | {slope_text} |")
    out += ["", "Groups are modules (weakcorr.correlations.by_group); 'mixed' is the sum of the "
            "cross-group Hessian terms, so within-group and mixed terms add up to 'total'; the "
            "slope is log-log over widths (one seed: no CI)."]
    return out


def _critical_lr(fm: Any, x: torch.Tensor) -> float | None:
    """B·d_y/λ_max of the empirical NTK on ``x`` (:func:`weakcorr.ntk.spectrum`), or None."""
    try:
        return float(ntk_spectrum(fm, x, k=1, tol=1e-6).critical_lr)
    except (ValueError, RuntimeError):
        return None


# ----------------------------------------------------------------------------- measuring


def _make(make_model: _factory.Family | Callable[..., nn.Module], width: int, seed: int
          ) -> nn.Module:
    family = make_model if isinstance(make_model, _factory.Family) else _factory.as_family(
        make_model)
    return _factory.make(family, width, seed, name="`make_model`")


def _curve(logs: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
    return [(int(e["step"]) + 1, math.sqrt(e["mse_test"])) for e in logs
            if e.get("mse_test") is not None]


def _train(model, data, lr, steps, batch_size, seed, eval_every, loss, device):
    res = paired_sgd(model, data, lr=lr, steps=steps, batch_size=batch_size or 1,
                     full_batch=batch_size is None, seed=seed, loss=loss, log_every=steps,
                     eval_every=eval_every, device=device)
    if res.status != "ok" or res.metrics.get("mse_test") is None:
        return None, [], res.status
    return math.sqrt(res.metrics["mse_test"]), _curve(res.to_dict()["logs"]), "ok"


def _lr_or_inf(lr: float, width: int, lr_exponent: float,
               r_fn: Callable[[float], float] | None) -> float:
    """lr · n^lr_exponent (· r(n)); inf where that overflows or is not a real number."""
    try:
        out = lr * float(width) ** lr_exponent
        return out * float(r_fn(width)) if r_fn is not None else float(out)
    except (ArithmeticError, ValueError, TypeError):
        return math.inf


def _r_function(r: float | Callable[[float], float] | None) -> Callable[[float], float] | None:
    if r is None or callable(r):
        return r
    if isinstance(r, numbers.Real) and not isinstance(r, bool) and math.isfinite(r):
        return lambda n: float(n) ** float(r)
    raise ValueError(f"`r` must be None, an exponent ρ (r(n) = n^ρ) or a callable n -> r(n), "
                     f"got {r!r}")


def diagnose(
    make_model: Callable[..., nn.Module] | str,
    data: Any,
    *,
    widths: Sequence[int],
    model_kwargs: Mapping[str, Any] | None = None,
    lr: float,
    steps: int,
    seeds: int | Sequence[int],
    batch_size: int | None = None,
    lr_exponent: float = 0.0,
    r: float | Callable[[float], float] | None = None,
    n_inputs: int = 16,
    eval_every: int | None = None,
    loss: str = "mse",
    hessian_iters: int = 10,
    norm_restarts: int = 2,
    device: str | None = None,
    level: float = 0.95,
    n_boot: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> DiagnoseResult:
    """Measure a model family across widths and seeds and check the paper's conditions.

    Args:
        make_model: the family: ``make_model(width, seed) -> nn.Module``; or
            ``make_model(width)``, then it is called after ``torch.manual_seed(seed)`` inside
            ``torch.random.fork_rng`` (the global RNG is restored afterwards); or a spec
            ``"MODULE:FUNCTION"`` / ``"path/to/file.py:FUNCTION"`` of such a function. The
            seed also sets the batch order. Its signature, and what it returns at the smallest
            width, are checked before any work.
        data: a :class:`weakcorr.data.Dataset` (:func:`weakcorr.data.load`), or a pair
            ``(train, test)`` of torch Datasets, DataLoaders or ``(X, Y)`` tensor tuples
            (:func:`weakcorr.data.as_dataset`).
        widths: at least 3 distinct widths.
        model_kwargs: keyword arguments passed to every ``make_model`` call.
        lr: η0; the training (and correlation) learning rate is η(n) = lr · n^lr_exponent.
        steps: training steps S.
        seeds: a count (seeds 0..k-1) or a list; at least 5 (quantile fits over seeds).
        batch_size: SGD batch size; None: full batch (gradient descent).
        lr_exponent: α of η(n) = lr · n^α.
        r: also train with η(n)·r(n) (Eq. 18): an exponent ρ (r(n) = n^ρ) or a callable.
        n_inputs: training inputs over which C^{0,2}, C^{0,3} are averaged (RMS).
        eval_every: log the test deviation every this many steps (default S // 40).
        loss: ``"mse"`` or ``"cross_entropy"``.
        hessian_iters: Lanczos steps of the Hessian norm (0: skip the ratio).
        norm_restarts: restarts of the C^{1,1} norm.
        device: ``"cpu"`` (default) or ``"cuda"``.
        level, n_boot: confidence level and bootstrap size of the exponent fits.
        progress: ``progress(n_done, n_total)`` after each (width, seed).

    Returns:
        A :class:`DiagnoseResult`; :meth:`DiagnoseResult.lines` are the verdicts.

    Raises:
        ValueError: too few widths or seeds, a bad ``lr``, ``steps``, ``r`` or ``n_inputs``;
            a factory spec that cannot be imported, or a model that cannot take the inputs.
        TypeError: a ``make_model`` of the wrong signature or returning no ``nn.Module``; a
            ``data`` of no accepted form.
    """
    family = _factory.as_family(make_model, model_kwargs, name="make_model")
    data = _torchdata.as_dataset(data)
    ws = sorted({int(w) for w in widths})
    if len(ws) < MIN_NS or ws[0] < 1:
        raise ValueError(f"`widths` must hold at least {MIN_NS} distinct positive widths, got "
                         f"{list(widths)!r}; e.g. widths=[32, 64, 128, 256]")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if len(set(seed_list)) < MIN_SAMPLES:
        raise ValueError(f"`seeds` must give at least {MIN_SAMPLES} distinct seeds (quantile "
                         f"exponents over seeds), got {seeds!r}; e.g. seeds=5")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be a finite number > 0, got {lr!r}")
    if not (isinstance(lr_exponent, (int, float)) and math.isfinite(lr_exponent)):
        raise ValueError(f"`lr_exponent` must be a finite number (lr · n^lr_exponent), got "
                         f"{lr_exponent!r}")
    if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"`device` is {device!r} but CUDA is not available here; use "
                         "device='cpu'")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"`steps` must be an integer >= 2, got {steps!r}")
    if not isinstance(n_inputs, int) or n_inputs < 2 or n_inputs > len(data.X_train):
        raise ValueError(f"`n_inputs` must be in 2..{len(data.X_train)} (the training set), "
                         f"got {n_inputs!r}")
    if batch_size is not None and not (isinstance(batch_size, int) and
                                       1 <= batch_size <= len(data.X_train)):
        raise ValueError(f"`batch_size` must be None (full batch) or in 1..{len(data.X_train)} "
                         f"(the training set), got {batch_size!r}")
    r_fn = _r_function(r)
    for w in ws:  # the training learning rates, checked before any work
        lr_w = _lr_or_inf(lr, w, lr_exponent, None)
        if not (math.isfinite(lr_w) and lr_w > 0):
            raise ValueError(f"`lr_exponent` ({lr_exponent!r}) gives the learning rate lr · "
                             f"n^lr_exponent = {lr_w!r} at width {w}, not a finite number > 0; "
                             "use a smaller |lr_exponent|")
        if r_fn is not None:
            lr_r = _lr_or_inf(lr, w, lr_exponent, r_fn)
            if not (math.isfinite(lr_r) and lr_r > 0):
                raise ValueError(f"`r` ({r!r}) gives the learning rate lr · n^lr_exponent · "
                                 f"r(n) = {lr_r!r} at width {w}, not a finite number > 0; use "
                                 "an r(n) that stays finite and positive")
    eval_every = eval_every or max(1, steps // 40)
    X = data.X_train[:n_inputs]
    _factory.check_member(family, ws[0], seed_list[0], X)
    total, done = len(ws) * len(seed_list), 0
    ms: list[Measurement] = []
    for w in ws:
        lr_n = lr * float(w) ** lr_exponent
        for s in seed_list:
            model = _make(family, w, s)
            fm = functional(model)
            dev = torch.device(device) if device else fm.device
            Xd = X.to(device=dev, dtype=fm.dtype if X.is_floating_point() else X.dtype)
            m = Measurement(width=w, seed=s, lr=lr_n, eps=float(torch.finfo(fm.dtype).eps))
            with torch.no_grad():
                x_te = data.X_test.to(dev, fm.dtype if X.is_floating_point() else X.dtype)
                m.output_rms = float(fm(fm.params, x_te).pow(2).mean().sqrt())
            diag = C.diagonal(fm, Xd, orders=(2, 3), lr=lr_n)
            m.c02, m.c03 = (float(diag[k].double().pow(2).mean().sqrt()) for k in (2, 3))
            m.kernel_distance = _limits.kernel_distance(model, Xd)
            if s == seed_list[0] and loss == "mse":  # the width's critical lr (full-batch MSE)
                n_crit = min(CRITICAL_LR_INPUTS, batch_size or len(data.X_train))
                xc = data.X_train[:n_crit].to(device=dev, dtype=Xd.dtype)
                m.critical_lr = _critical_lr(fm, xc)
            if s == seed_list[0]:  # which layer carries C^{0,1} and C^{0,2}
                with contextlib.suppress(ValueError, RuntimeError):
                    m.by_layer = layer_summary(C.by_group(fm, Xd[:4], lr=lr_n))
            if batch_size is None and loss == "mse":  # closed-form F_lin, Θ0 against Θ∞
                like = dict(device=dev, dtype=Xd.dtype)
                m.flin_distance = _limits.flin_distance(
                    model, data.X_train.to(**like), data.Y_train.to(**like),
                    data.X_test.to(**like), lr=lr_n, steps=steps)
            gen = torch.Generator().manual_seed(s)
            m.c11 = max(float(C.norm(fm, Xd[:1], [xs], D=1, lr=lr_n, restarts=norm_restarts,
                                     generator=gen).value) for xs in (Xd[:1], Xd[1:2]))
            if hessian_iters:
                with contextlib.suppress(ValueError):
                    m.hg_ratio = _a1.hessian_gradient(fm, Xd[:1], max_iter=hessian_iters,
                                                      seed=s)[0]
            m.error, m.curve, m.status = _train(model, data, lr_n, steps, batch_size, s,
                                                eval_every, loss, device)
            if r_fn is not None and m.status == "ok":
                m.error_r, m.curve_r, _ = _train(model, data, lr_n * r_fn(w), steps, batch_size,
                                                 s, eval_every, loss, device)
            ms.append(m)
            done += 1
            if progress is not None:
                progress(done, total)
    r_exp = None
    if r_fn is not None:
        r_exp = loglog_slope(ws, [r_fn(w) for w in ws])
    settings = {"model": family.spec, "model_kwargs": dict(family.kwargs), "widths": ws,
                "seeds": seed_list, "lr": lr, "lr_exponent": lr_exponent,
                "steps": steps, "batch_size": batch_size, "n_inputs": n_inputs,
                "eval_every": eval_every, "loss": loss, "r_exponent": r_exp,
                "r": None if r is None else (r if isinstance(r, numbers.Real) else repr(r))}
    return analyze(ms, r_exponent=r_exp, level=level, n_boot=n_boot, settings=settings)


# ----------------------------------------------------------------------------- report


def measurement_table(result: DiagnoseResult) -> Any:
    """One row per (width, seed): the scalar measurements (a pandas DataFrame)."""
    import pandas as pd

    cols = ["width", "seed", "lr", "status", "c02", "c03", "c11", "hg_ratio", "error", "error_r"]
    return pd.DataFrame([{c: getattr(m, c) for c in cols} for m in result.measurements],
                        columns=cols)


def curve_table(result: DiagnoseResult) -> Any:
    """The test deviation RMS(f − f_lin) against the step, one row per (width, seed, step)."""
    import pandas as pd

    rows = [{"width": m.width, "seed": m.seed, "step": s, "deviation": d}
            for m in result.measurements for s, d in m.curve]
    return pd.DataFrame(rows, columns=["width", "seed", "step", "deviation"])


def write_report(result: DiagnoseResult, out_dir: str | Any) -> dict[str, Any]:
    """Write ``diagnose.md``, ``diagnose.json`` and ``figures/`` (PNG + PDF) into ``out_dir``.

    Returns:
        ``{"markdown": path, "json": path, "figures": [paths]}``.
    """
    import pathlib

    from . import _a1_plots
    from ._files import atomic_write_text
    from .results import atomic_write_json

    check_writable_dir(out_dir, subdirs=("figures",))
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = measurement_table(result)
    if result.settings.get("r_exponent") is None:
        table = table.drop(columns=["error_r"])
    fits = {k: (e.upper[0], f"q95 slope {e.upper[0]:+.2f}") for k, e in result.exponents.items()
            if e.status == "fit"}
    figs = []
    _a1_plots.plot_diagnose_scaling(table, fits=fits, save_to=out / "figures" / "scaling")
    figs.append("figures/scaling.png")
    curves = curve_table(result)
    _a1_plots.plot_deviation_curves(curves, panels=(), save_to=out / "figures" / "deviation")
    figs.append("figures/deviation.png")
    st = result.settings
    family = (f"Model family `{st['model']}`"
              + (f" with {st['model_kwargs']}" if st.get("model_kwargs") else "") + ". "
              if st.get("model") else "")
    lines = ["# weakcorr diagnose", "",
             family + f"Widths {st.get('widths')}, {len(st.get('seeds', []))} seeds, lr = {st.get('lr')} · "
             f"n^{st.get('lr_exponent')}, S = {st.get('steps')} steps, batch "
             f"{st.get('batch_size') or 'full'}, correlations on {st.get('n_inputs')} inputs "
             f"with the training lr.", "", "## Verdicts", ""]
    lines += [f"- {line}" for line in result.lines()]
    problems = result.problem_runs()
    lines += ["", "## Diverged or failed runs", ""]
    lines += ([f"- {p}" for p in problems] + ["", f"{len(problems)} of "
              f"{len(result.measurements)} runs are left out of the error and deviation fits "
              "(diverged runs keep their correlations, measured at initialisation)."]
              if problems else ["None."])
    lines += ["", "Bounds compare the highest-quantile (q = 0.95) exponent of each quantity over "
              "seeds (`asymptotics.fit_order`, 95 % bootstrap CIs) with the bound implied by "
              "m(n) ~ n^μ, μ = −(error exponent); 'consistent' = the exponent's CI lies within "
              "the bound, or straddles it while no wider than |bound| (the distance to a "
              "width-independent quantity); a wider straddling CI is 'inconclusive' and a "
              "quantity without a fit 'not assessed', neither counts as a pass. "
              "Finite widths can only fail to contradict an asymptotic statement.", "",
              "## Exponents", "", "| quantity | status | exponent |", "|---|---|---|"]
    for k, e in result.exponents.items():
        lines.append(f"| {LABELS.get(k, k)} | {e.status} | {e.text()} {e.note} |")
    lines += _layer_lines(result)
    lines += ["", "## Deviation vs step (Cor. 4.1): late-half log-log slope per width", "",
              "| width | slope | CI |", "|---|---|---|"]
    for w, (s, lo, hi) in result.deviation_slopes.items():
        lines.append(f"| {w} | {s:+.2f} | [{lo:+.2f}, {hi:+.2f}] |")
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figs] + [""]
    md = out / "diagnose.md"
    atomic_write_text(md, "\n".join(lines))
    js = atomic_write_json(out / "diagnose.json", result.to_dict())
    return {"markdown": md, "json": js, "figures": [out / f for f in figs]}
