"""The A.1 pipeline end to end on a tiny grid: records, known answers, resume, report."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

from weakcorr import _a1, _a1_report
from weakcorr import correlations as C
from weakcorr.functional import functional
from weakcorr.results import RunStore, run_id
from weakcorr.sweep import PerRun

from ._tiny import tiny


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("a1")
    cfg = _a1.from_dict(tiny())
    events = []
    summary = _a1_report.run_a1(cfg, out, progress=events.append)
    return cfg, out, summary, events


def test_one_json_per_run_all_ok(swept):
    cfg, out, summary, events = swept
    n = 3 * 2 * 2 * 2
    assert (summary.total, summary.ran, summary.skipped) == (n, n, 0)
    assert summary.counts["ok"] == n
    recs = list(RunStore(out).records())
    assert len(recs) == n and {r["status"] for r in recs} == {"ok"}
    assert events[0].outcome is None and events[-1].done == n
    trained = [r for r in recs if r["config"]["training"]]
    assert len(trained) == n // 2
    for r in trained:
        assert r["metrics"]["c_test"] > 0 and r["metrics"]["loss_f_test"] > 0
        steps = [e["step"] for e in r["logs"] if "mse_test" in e]
        assert steps == list(range(8))  # eval_every = 1
    for r in recs:
        assert len(r["samples"]["c2_abs"]) == 8 * 10


def test_exact_values_match_an_independent_computation(swept):
    """c2/c3 come from the right orders: recomputed with the generic (vjp + nested jvp) path."""
    cfg, out, _, _ = swept
    rec = next(r for r in RunStore(out).records()
               if r["config"]["model"]["activation"] == "erf" and r["config"]["model"]["depth"] == 2)
    ds = _a1._dataset(rec["config"])
    fm = functional(_a1.build_model(rec["config"], 64, 10))
    diag = C.diagonal(fm, ds.X_train, orders=(2, 3), lr=1.0, method="generic")
    for k in (2, 3):
        want = float(diag[k].double().pow(2).mean().sqrt())
        assert rec["metrics"][f"c{k}_exact"] == pytest.approx(want, rel=1e-4)
    ratio, _ = _a1.hessian_gradient(fm, ds.X_train[:1], max_iter=200)
    assert rec["metrics"]["hg_ratio"] == pytest.approx(ratio, rel=1e-2)


def test_relu_one_hidden_layer_has_zero_third_order(swept):
    """f = W2 relu(W1 x + b1) + b2: every third derivative needs relu'' = 0 or is linear in W2."""
    _, out, _, _ = swept
    recs = [r for r in RunStore(out).records()
            if r["config"]["model"]["activation"] == "relu" and r["config"]["model"]["depth"] == 1]
    assert recs and all(r["metrics"]["c3_exact"] == 0.0 for r in recs)
    assert all(r["metrics"]["c3_paper"] == 0.0 for r in recs)
    assert all(r["metrics"]["c2_exact"] > 0 for r in recs)


def test_paper_estimator_with_every_parameter_is_exact_over_n_squared(tmp_path):
    """With |D| >= every layer, Eq. 25 (RMS reading) = exact RMS / N^d: checks the wiring."""
    cfg = _a1.from_dict(tiny(model={"widths": [4], "depths": [1], "activations": ["erf"]},
                             seeds=1, correlations={"params_per_layer": 10**6}, training={"seeds": 0}))
    rec = _a1.run(_a1.expand(cfg)[0])
    n = rec["n_params"]
    assert rec["metrics"]["c2_paper"] == pytest.approx(rec["metrics"]["c2_exact"] / n**2, rel=1e-4)
    assert rec["metrics"]["c3_paper"] == pytest.approx(rec["metrics"]["c3_exact"] / n**3, rel=1e-4)
    assert rec["config"]["training"] is None and "c_test" not in rec["metrics"]


def test_rerun_skips_finished_runs(swept):
    cfg, out, _, _ = swept
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    calls = []
    summary = _a1_report.run_a1(cfg, out, runner=PerRun(lambda c, device: calls.append(c)))
    assert (summary.ran, summary.skipped) == (0, summary.total) and calls == []
    assert {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == before


def test_failed_runs_recorded_and_retried_on_request(tmp_path):
    cfg = _a1.from_dict(tiny(model={"widths": [4, 8]}, seeds=1, training={"seeds": 0}))

    def flaky(c, device):
        if c["model"]["width"] == 8:
            raise RuntimeError("boom")
        return {"status": "ok", "metrics": {}, "kind": "a1"}

    s1 = _a1_report.run_a1(cfg, tmp_path, runner=PerRun(flaky))
    assert s1.counts == {"ok": 4, "diverged": 0, "failed": 4, "claimed-elsewhere": 0}
    failed = [r for r in RunStore(tmp_path).records() if r["status"] == "failed"]
    assert all("RuntimeError: boom" in r["error"] for r in failed)
    assert _a1_report.run_a1(cfg, tmp_path, runner=PerRun(flaky)).ran == 0
    s3 = _a1_report.run_a1(cfg, tmp_path, runner=PerRun(lambda c, device: {"status": "ok"}),
                           retry_failed=True)
    assert s3.ran == 4 and s3.counts["ok"] == 4


def test_report_has_exponents_verdicts_and_figures(swept):
    _, out, _, _ = swept
    summary = _a1_report.write_report(out, n_boot=200)
    md = (out / "report.md").read_text()
    assert "## digits: width exponents" in md and "## Verdicts (at the measured widths)" in md
    assert "Random-tensor asymptotics of the diagonal entries" in md
    assert len(summary["verdicts"]) == 4
    for line in summary["verdicts"]:
        assert line.startswith("digits, depth ")
        assert "Thm 3.1 (Eq. 14)" in line or "not assessed" in line
    for name in ("fig1_c2_digits", "fig3_c3_digits", "fig2_linearization_digits",
                 "deviation_vs_step_digits"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (out / "figures" / f"{name}.pdf").exists()
    data = json.loads((out / "summary.json").read_text())
    assert data["runs"]["ok"] == 24 and data["fits"]
    assert "| 1 | relu |" in md and "≡ 0" in md.split("| 1 | relu |")[1].split("\n")[0]
    fit = next(f for f in data["fits"] if f["quantity"] == "c2_exact" and f["depth"] == 2
               and f["activation"] == "erf")
    assert fit["ci_kind"] == "seeds" and fit["n_seeds"] == 2 and fit["n_widths"] == 3


def test_fit_exponents_recovers_known_slopes():
    pd = pytest.importorskip("pandas")
    rows = []
    gen = torch.Generator().manual_seed(0)
    for w in (8, 16, 32, 64, 128):
        for s in range(4):
            noise = math.exp(0.05 * float(torch.randn(1, generator=gen)))
            rows.append({"run_id": f"{w}-{s}", "status": "ok", "dataset": "x", "depth": 1,
                         "activation": "erf", "width": w, "seed": s,
                         "c2_exact": 3.0 * w**-1.0 * noise, "c3_exact": 0.0,
                         "c_test": 0.1 * w**-0.5 * noise})
    fits = _a1_report.fit_exponents(pd.DataFrame(rows), n_boot=500)
    by = {r["quantity"]: r for _, r in fits.iterrows()}
    assert by["c2_exact"]["ci_low"] <= -1.0 <= by["c2_exact"]["ci_high"]
    assert by["c_test"]["slope"] == pytest.approx(-0.5, abs=0.05)
    assert math.isnan(by["c3_exact"]["slope"]) and by["c3_exact"]["n_widths"] == 0
    assert by["c3_exact"]["all_zero"] and not by["c2_exact"]["all_zero"]


def test_figure_grids_share_one_panel_order(swept):
    """Fig. 1 and the deviation figure put the same (depth, activation) in the same panel."""
    _, out, _, _ = swept
    from weakcorr import _a1_plots

    def titles(fig):
        return [" ".join(ax.get_title().split()[:3]) for ax in fig.axes if ax.get_title()]

    table = _a1_report.load_table(out)
    curves = _a1_report.load_curves(out)
    fig1 = _a1_plots.plot_correlations_vs_width(table, order="c2", dataset="digits")
    dev = _a1_plots.plot_deviation_curves(curves)
    assert titles(dev) and titles(fig1) == titles(dev)
    assert titles(dev)[:2] == ["erf, 1 hidden", "relu, 1 hidden"]


def _fake(c, device):
    return {"status": "ok", "metrics": {}, "kind": "a1", "config": c, "seed": c["seed"]}


def test_directory_grows_and_run_ids_are_the_union(tmp_path):
    """Review A #1: sweep.json listed only the last sweep's runs, so the report said
    'N of M runs present' with N > M after a directory grew."""
    small = _a1.from_dict(tiny(model={"widths": [4, 8], "depths": [1], "activations": ["relu"]},
                               seeds=1, training={"seeds": 0}))
    _a1_report.run_a1(small, tmp_path, runner=PerRun(_fake))
    wider = _a1.from_dict(tiny(model={"widths": [16], "depths": [1, 2], "activations": ["relu"]},
                               seeds=[0, 1], training={"seeds": 0}))
    assert _a1_report.run_a1(wider, tmp_path, runner=PerRun(_fake)).ran == 4
    manifest = RunStore(tmp_path).read_manifest()
    assert len(manifest["run_ids"]) == 6 == len(set(manifest["run_ids"]))
    assert set(manifest["run_ids"]) == set(RunStore(tmp_path).run_ids())
    assert len(_a1_report.load_table(tmp_path)) == 6


def test_runs_not_listed_in_the_manifest_are_included_and_noted(tmp_path):
    """A directory of an older version lists only its latest sweep's runs: the others count."""
    cfg = _a1.from_dict(tiny(model={"widths": [4, 8], "depths": [1], "activations": ["relu"]},
                             seeds=1, training={"seeds": 0}))
    _a1_report.run_a1(cfg, tmp_path, runner=PerRun(_fake))
    other = _a1.expand(_a1.from_dict(tiny(model={"widths": [16], "depths": [1],
                                                  "activations": ["relu"]},
                                           seeds=1, training={"seeds": 0})))[0]
    stray = run_id(other)  # a run of another sweep, under its own id (a record must hash to it)
    RunStore(tmp_path).write(stray, _fake(other, None))
    table = _a1_report.load_table(tmp_path)
    assert len(table) == 3 and stray in set(table["run_id"])
    assert len(_a1_report._records(tmp_path, unlisted=True)) == 1


def test_a1_sweep_refuses_other_protocols_and_seed_role_changes(tmp_path):
    def cfg(**changes):
        base = {"model": {"widths": [4], "depths": [1], "activations": ["relu"]},
                "seeds": [0, 1], "training": {"seeds": 1}}
        return _a1.from_dict(tiny(**{**base, **changes}))

    _a1_report.run_a1(cfg(), tmp_path, runner=PerRun(_fake))
    manifest = (tmp_path / "sweep.json").read_text()
    with pytest.raises(ValueError, match=r"^`out_dir` .* holds an A.1 sweep of another protocol "
                                         r"\(correlations.lr: 1.0 -> 0.5\)"):
        _a1_report.run_a1(cfg(correlations={"lr": 0.5}), tmp_path, runner=PerRun(_fake))
    # Seed 1 was not trained; with seeds [1, 2] it would be, and counted twice at each width.
    with pytest.raises(ValueError, match=r"^`seeds` / `training.seeds`: seed 1 was not trained"):
        _a1_report.run_a1(cfg(seeds=[1, 2]), tmp_path, runner=PerRun(_fake))
    assert (tmp_path / "sweep.json").read_text() == manifest
    assert len(RunStore(tmp_path).run_ids()) == 2
    # Setting data.data_dir (to add the file datasets later) is allowed.
    _a1_report.run_a1(cfg(data={**tiny()["data"], "data_dir": str(tmp_path)}), tmp_path,
                      runner=PerRun(_fake))
    # Appending seeds keeps every seed's role: allowed.
    s = _a1_report.run_a1(cfg(seeds=[0, 1, 2]), tmp_path, runner=PerRun(_fake))
    assert (s.skipped, s.ran) == (2, 1)


def _fits(**rows):
    """A fit_exponents table of one (dataset, depth, activation) from {quantity: (slope, lo, hi,
    n_widths, n_seeds)}."""
    pd = pytest.importorskip("pandas")
    return pd.DataFrame([{"dataset": "x", "depth": 1, "activation": "erf", "quantity": q,
                          "slope": v[0], "ci_low": v[1], "ci_high": v[2], "ci_kind": "seeds",
                          "n_widths": v[3], "n_seeds": v[4], "all_zero": False}
                         for q, v in rows.items()])


def _curves():
    pd = pytest.importorskip("pandas")
    return pd.DataFrame(columns=["dataset", "depth", "activation", "width", "seed", "step",
                                 "deviation"])


def test_verdicts_without_a_ci_are_not_assessed():
    """Review A #5b: one seed at two widths gave a zero-width 'CI' and a firm NOT consistent."""
    nan = math.nan
    (line,) = _a1_report._verdicts(_fits(c_test=(-1.0, nan, nan, 2, 1),
                                         c2_exact=(-0.5, nan, nan, 2, 1)), _curves())
    assert line == ("x, depth 1, erf: m(n) not estimated from C(f, f_lin) (slope -1.00 from 1 "
                    "seed at 2 widths; a CI needs >= 2 seeds or >= 3 widths); Theorems 3.1/3.2 "
                    "not assessed.")
    # m(n) has a CI, C^{0,2} has none: not assessed, not a failure; the other two pass.
    (line,) = _a1_report._verdicts(_fits(c_test=(-1.0, -1.1, -0.9, 3, 2),
                                         c2_exact=(-0.5, nan, nan, 2, 1),
                                         c3_exact=(-2.0, -2.1, -1.9, 3, 2),
                                         c11_same=(-1.0, -1.1, -0.9, 3, 2)), _curves())
    assert "NOT consistent" not in line
    assert "Thm 3.1 (Eq. 14) consistent on what was assessed (1 of 3 not assessed) (C^{0,2} no " \
           "confidence interval (not assessed; slope -0.50 from 1 seed at 2 widths" in line
    # Nothing measured but m(n): not assessed, not 'consistent'.
    (line,) = _a1_report._verdicts(_fits(c_test=(-1.0, -1.1, -0.9, 3, 2)), _curves())
    assert "Thm 3.1 (Eq. 14) not assessed (C^{0,2} not measured (not assessed)" in line
    assert "Thm 3.2 (Eq. 17) not assessed" in line and " consistent" not in line


def test_verdicts_with_one_width_say_so():
    """Review A #14: one width gave 'no trained runs to estimate m(n)'."""
    (line,) = _a1_report._verdicts(_fits(c_test=(math.nan, math.nan, math.nan, 1, 2)), _curves())
    assert "positive values at 1 width; a slope needs >= 2 widths" in line
    assert "no trained run" not in line
    (line,) = _a1_report._verdicts(_fits(c_test=(math.nan, math.nan, math.nan, 0, 0)), _curves())
    assert "no trained run with a positive C(f, f_lin)" in line


def test_write_report_refuses_an_a2_directory_before_writing(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r1.json").write_text('{"status": "ok", "run_id": "r1"}')
    (tmp_path / "sweep.json").write_text('{"kind": "a2", "config": {}, "run_ids": ["r1"]}')
    with pytest.raises(ValueError, match=r"is an App. A.2 sweep directory .* use `weakcorr "
                                         r"report "):
        _a1_report.write_report(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "sweep.json"]


def _killed_at_width_8(c, device):
    """An A.1 runner whose worker dies (SIGKILL, as the OOM killer would) at width 8."""
    if c["model"]["width"] == 8:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"status": "ok", "metrics": {}, "kind": "a1"}


@pytest.mark.slow  # 4.4 s (a 2-worker pool); A.2's pool deaths stay default (tests/sweep, faults)
def test_worker_killed_mid_run_is_recorded_failed_and_the_rest_go_on(tmp_path):
    cfg = _a1.from_dict(tiny(model={"widths": [4, 8], "depths": [1], "activations": ["relu"]},
                             seeds=1, training={"seeds": 0}))
    summary = _a1_report.run_a1(cfg, tmp_path, workers=2, runner=PerRun(_killed_at_width_8))
    assert summary.counts["ok"] == 1 and summary.counts["failed"] == 1
    failed = [r for r in RunStore(tmp_path).records() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["config"]["model"]["width"] == 8
    assert "died" in failed[0]["error"]


def test_report_lists_and_skips_corrupt_records(swept, tmp_path):
    """A run file that is not a valid record is named in report.md with its reason and left out
    of the fits (as the A.2 report does), not a crash or a silent gap."""
    import shutil

    _, out, _, _ = swept
    copy = tmp_path / "a1"
    shutil.copytree(out, copy)
    victim = sorted((copy / "runs").glob("*.json"))[0]
    victim.write_text("{not json")
    table = _a1_report.load_table(copy)
    assert victim.stem not in set(table["run_id"]) and len(table) > 0
    assert list(table.attrs["corrupt"]) == [victim.name]
    _a1_report.write_report(copy, n_boot=50)
    md = (copy / "report.md").read_text()
    assert (f"- 1 corrupt run file(s) skipped (`weakcorr a1` redoes them): {victim.name}: "
            "unreadable (JSONDecodeError") in md
