"""Tidy tables of sweep directories and power-law fits against synthetic data with known slopes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from weakcorr import analysis, config, sweep

from ._fake import TRUE_SLOPES, CountingRunner, fake_runner

WIDTHS = np.array([64, 91, 128, 181, 256, 362, 512, 724, 1024])


def synthetic(slopes: dict[float, float], *, n_seeds: int, noise: float, seed_sd: float,
              rng: np.random.Generator) -> pd.DataFrame:
    """log y = b + s log n + seed effect + noise, for every (α, width, seed)."""
    rows = []
    for a, s in slopes.items():
        effects = rng.normal(0, seed_sd, n_seeds)
        for seed in range(n_seeds):
            for n in WIDTHS:
                y = math.exp(2.0 + s * math.log(n) + effects[seed] + rng.normal(0, noise))
                rows.append({"alpha": a, "width": n, "seed": seed, "status": "ok", "mse_test": y})
    return pd.DataFrame(rows)


def test_recovers_known_slopes_and_ci_covers_truth():
    truth = {0.0: -1.14, -0.5: -1.3, -1.0: -2.72}
    df = synthetic(truth, n_seeds=12, noise=0.2, seed_sd=0.1, rng=np.random.default_rng(0))
    fits = analysis.fit_power_law(df, n_boot=2000, seed=1)
    assert list(fits["alpha"]) == [0.0, -0.5, -1.0]
    for _, r in fits.iterrows():
        s = truth[r["alpha"]]
        assert r["slope"] == pytest.approx(s, abs=0.06)
        assert r["ci_low"] < s < r["ci_high"]
        assert 0 < r["ci_high"] - r["ci_low"] < 0.3
        assert r["intercept"] == pytest.approx(2.0, abs=0.5)
        assert r["n_runs"] == 12 * len(WIDTHS) and r["n_seeds"] == 12 and r["n_widths"] == 9
        assert 0.9 < r["r2"] <= 1


def test_exact_power_law_has_zero_width_ci():
    df = synthetic({-1.0: -2.0}, n_seeds=4, noise=0.0, seed_sd=0.0, rng=np.random.default_rng(0))
    (r,) = analysis.fit_power_law(df, n_boot=200).itertuples()
    assert r.slope == pytest.approx(-2.0, abs=1e-12) and r.intercept == pytest.approx(2.0, abs=1e-9)
    assert r.ci_low == pytest.approx(-2.0, abs=1e-9) and r.ci_high == pytest.approx(-2.0, abs=1e-9)
    assert r.r2 == pytest.approx(1.0)


@pytest.mark.parametrize("n_seeds,method,low", [(5, "t", 0.88), (12, "t", 0.88),
                                                 (12, "percentile", 0.8)],
                         ids=["t-5-seeds", "t-12-seeds", "percentile-12-seeds"])
def test_ci_coverage_near_nominal(n_seeds, method, low):
    rng = np.random.default_rng(3)
    hits = 0
    reps = 100
    for _ in range(reps):
        df = synthetic({0.0: -1.5}, n_seeds=n_seeds, noise=0.3, seed_sd=0.2, rng=rng)
        r = analysis.fit_power_law(df, n_boot=400, seed=int(rng.integers(1 << 30)),
                                   method=method).iloc[0]
        hits += r["ci_low"] <= -1.5 <= r["ci_high"]
    assert low <= hits / reps <= 0.995


def test_bootstrap_resamples_whole_seeds():
    """A seed-level slope deviation must widen the CI; run-level resampling would not see it."""
    rng = np.random.default_rng(5)
    df = synthetic({0.0: -1.0}, n_seeds=8, noise=0.01, seed_sd=0.0, rng=rng)
    seed_slope = {s: rng.normal(0, 0.3) for s in range(8)}
    center = np.log(WIDTHS).mean()
    df["mse_test"] *= np.exp([seed_slope[s] * (math.log(n) - center)
                              for s, n in zip(df["seed"], df["width"])])
    r = analysis.fit_power_law(df, n_boot=2000).iloc[0]
    spread = np.std(list(seed_slope.values()), ddof=1) / math.sqrt(8)
    assert r["ci_high"] - r["ci_low"] > 2.5 * spread
    per_run = analysis.fit_power_law(df.assign(seed=np.arange(len(df))), n_boot=2000).iloc[0]
    assert r["ci_high"] - r["ci_low"] > 2 * (per_run["ci_high"] - per_run["ci_low"])


def test_only_ok_finite_positive_rows_enter():
    df = synthetic({0.0: -1.0}, n_seeds=3, noise=0.0, seed_sd=0.0, rng=np.random.default_rng(0))
    bad = pd.DataFrame([
        {"alpha": 0.0, "width": 64, "seed": 9, "status": "diverged", "mse_test": 1e9},
        {"alpha": 0.0, "width": 128, "seed": 9, "status": "failed", "mse_test": np.nan},
        {"alpha": 0.0, "width": 256, "seed": 9, "status": "ok", "mse_test": 0.0},
        {"alpha": 0.0, "width": 512, "seed": 9, "status": "ok", "mse_test": np.inf},
        {"alpha": 0.0, "width": 512, "seed": 8, "status": "ok", "mse_test": -1.0},
    ])
    r = analysis.fit_power_law(pd.concat([df, bad]), n_boot=100).iloc[0]
    assert r["slope"] == pytest.approx(-1.0, abs=1e-12) and r["n_runs"] == 27 and r["n_seeds"] == 3


def test_degenerate_groups():
    one_seed = synthetic({0.0: -1.0}, n_seeds=1, noise=0.1, seed_sd=0, rng=np.random.default_rng(0))
    r = analysis.fit_power_law(one_seed).iloc[0]
    assert math.isfinite(r["slope"]) and math.isnan(r["ci_low"]) and r["n_seeds"] == 1
    one_width = one_seed[one_seed["width"] == 64]
    r = analysis.fit_power_law(one_width).iloc[0]
    assert math.isnan(r["slope"]) and r["n_runs"] == 1
    none_ok = one_seed.assign(status="failed")
    r = analysis.fit_power_law(none_ok).iloc[0]
    assert r["n_runs"] == 0 and math.isnan(r["slope"])


@pytest.mark.parametrize("kwargs,match", [
    ({"y": "nope"}, "lacks column.*'nope'"), ({"ci": 1.5}, "`ci` must be in"),
    ({"n_boot": 1}, "`n_boot` must be an integer >= 2"),
    ({"method": "bca"}, "`method` must be 't' or"),
], ids=["column", "ci", "n_boot", "method"])
def test_fit_bad_arguments(kwargs, match):
    df = synthetic({0.0: -1.0}, n_seeds=2, noise=0.1, seed_sd=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=match):
        analysis.fit_power_law(df, **kwargs)


def test_compare_with_paper():
    fits = pd.DataFrame([{"alpha": 0.0, "slope": -1.0, "ci_low": -1.2, "ci_high": -0.9,
                          "n_runs": 10},
                         {"alpha": -1.0, "slope": -2.0, "ci_low": -2.1, "ci_high": -1.9,
                          "n_runs": 10}])
    cmp = analysis.compare_with_paper(fits).set_index("alpha")
    assert list(cmp.index) == [0.0, -0.25, -0.5, -0.75, -1.0]
    assert list(cmp["paper_slope"]) == [-1.14, -1.14, -1.3, -1.73, -2.72]
    assert cmp.loc[0.0, "paper_in_ci"] is True and cmp.loc[-1.0, "paper_in_ci"] is False
    assert cmp.loc[0.0, "difference"] == pytest.approx(0.14)
    assert cmp.loc[-0.5, "n_runs"] == 0 and cmp.loc[-0.5, "paper_in_ci"] is None


def _sweep_dir(tmp_path, *, failing=False):
    cfg = config.load({
        "model": {"widths": [16, 32, 64, 128, 256]},
        "data": {"name": "teacher", "n_train": 64, "n_test": 32},
        "training": {"steps": 20, "batch_size": 16, "lr0": 0.1, "alphas": [0, -0.5, -1]},
        "seeds": 5, "logging": {"every": 5}, "name": "fake"})
    runner = CountingRunner(str(tmp_path / "c.txt"), fail_seeds=(4,)) if failing else fake_runner
    sweep.run_sweep(cfg, str(tmp_path / "s"), runner=runner, check_data=False)
    return tmp_path / "s"


def test_load_table_columns_and_fit_of_fake_sweep(tmp_path):
    root = _sweep_dir(tmp_path, failing=True)
    df = analysis.load_table(root)
    assert len(df) == 75 and (df["status"] == "failed").sum() == 15
    for col in ("run_id", "status", "width", "alpha", "lr", "seed", "depth", "activation",
                "parameterization", "steps", *analysis.METRICS, "wall_time_s"):
        assert col in df.columns
    assert df.loc[df["status"] == "failed", "error"].str.contains("boom").all()
    ok = df[df["status"] == "ok"]
    np.testing.assert_allclose(ok["lr"], 0.1 * ok["width"].astype(float) ** ok["alpha"])
    fits = analysis.fit_power_law(df).set_index("alpha")
    for a, s in TRUE_SLOPES.items():
        assert fits.loc[a, "slope"] == pytest.approx(s, abs=0.15)
        assert fits.loc[a, "n_seeds"] == 4
    logs = analysis.load_logs(root)
    assert set(logs.columns) >= {"run_id", "width", "alpha", "seed", "step", "loss_f", "loss_lin",
                                 "discrepancy"}
    assert len(logs) == 60 * 5


def test_load_table_of_empty_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run files"):
        analysis.load_table(tmp_path)


# --- review fixes: protocol columns, α keys, per-group bootstrap, exclusions, empty input -----

def test_load_table_carries_protocol_and_flags_mixed_runs(tmp_path):
    """Runs of another lr_factor/steps copied into a sweep dir are visible and refused."""
    import shutil

    root = _sweep_dir(tmp_path)
    df = analysis.load_table(root)
    for col in analysis.PROTOCOL_COLUMNS:
        assert col in df.columns
    assert (df["lr0"] == 0.1).all() and (df["lr_factor"] == "1").all()
    assert analysis.protocol_differences(df) == {}
    analysis.check_single_protocol(df)
    other = config.load({
        "model": {"widths": [16, 32]}, "data": {"name": "teacher", "n_train": 64, "n_test": 32},
        "training": {"steps": 10, "batch_size": 16, "lr0": 0.1, "alphas": [0],
                     "lr_factor": "sqrt(n)"},
        "seeds": 2, "logging": {"every": 5}, "name": "other"})
    sweep.run_sweep(other, str(tmp_path / "o"), runner=fake_runner, check_data=False)
    for p in (tmp_path / "o" / "runs").glob("*.json"):
        shutil.copy(p, root / "runs" / p.name)
    mixed = analysis.load_table(root)
    diffs = analysis.protocol_differences(mixed)
    assert diffs == {"steps": {20: 75, 10: 4}, "lr_factor": {"1": 75, "sqrt(n)": 4}}
    with pytest.raises(ValueError, match=r"differ in more than width, α and seed \(steps: 20 "
                       r"\(75 runs\), 10 \(4 runs\); lr_factor: '1' \(75 runs\), 'sqrt\(n\)' "
                       r"\(4 runs\)\).*directory of its own"):
        analysis.check_single_protocol(mixed)


def test_load_table_refuses_a1_records_and_unreadable_dirs(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "a.json").write_text("garbage")
    (runs / "b.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"2 run file\(s\) in .*, none readable"):
        analysis.load_table(tmp_path)
    (runs / "c.json").write_text('{"kind": "a1", "status": "ok", "config": {}, "seed": 0}')
    with pytest.raises(ValueError, match="is an App. A.1 directory.*--report-only"):
        analysis.load_table(tmp_path)


def test_alpha_groups_with_tolerance_and_none_dropped():
    base = synthetic({-0.25: -1.0, -1 / 3: -1.5}, n_seeds=3, noise=0.1, seed_sd=0.0,
                     rng=np.random.default_rng(0))
    nudged = base.copy()
    nudged.loc[nudged["seed"] == 1, "alpha"] = nudged["alpha"] - 1e-9  # −0.250000001, ...
    fits = analysis.fit_power_law(nudged, n_boot=50)
    assert len(fits) == 2 and list(fits["n_seeds"]) == [3, 3]
    assert fits["alpha"].iloc[0] == -0.25  # the most common value is the key
    ref = analysis.fit_power_law(base, n_boot=50)
    np.testing.assert_allclose(fits["slope"], ref["slope"])
    cmp = analysis.compare_with_paper(fits)
    assert cmp.loc[cmp["alpha"] == -0.25, "paper_slope"].item() == -1.14
    assert (cmp["alpha"] == fits["alpha"].iloc[1]).sum() == 1  # −1/3 kept, no paper slope
    # Two groups a hair apart that a dict keyed by round(α, 10) merged: both are kept.
    two = pd.DataFrame([{"alpha": -0.25, "slope": -1.0, "ci_low": -1.1, "ci_high": -0.9,
                         "n_runs": 5},
                        {"alpha": -0.25 + 1e-14, "slope": -2.0, "ci_low": -2.1, "ci_high": -1.9,
                         "n_runs": 5}])
    cmp = analysis.compare_with_paper(two)
    assert sorted(cmp.loc[cmp["n_runs"] > 0, "slope"]) == [-2.0, -1.0]
    assert analysis.group_keys(pd.Series([0.5, -0.0, 0.0])).tolist() == [0.5, 0.0, 0.0]


def test_non_numeric_by():
    df = pd.concat([synthetic({0.0: -1.0}, n_seeds=2, noise=0.1, seed_sd=0,
                              rng=np.random.default_rng(s)).assign(activation=act)
                    for s, act in enumerate(("relu", "gelu"))])
    fits = analysis.fit_power_law(df, by="activation", n_boot=50)
    assert list(fits["activation"]) == ["gelu", "relu"]
    cmp = analysis.compare_with_paper(fits, by="activation")
    assert list(cmp["activation"]) == ["gelu", "relu"] and cmp["paper_slope"].isna().all()


def test_bootstrap_of_a_group_does_not_depend_on_other_groups():
    df = synthetic({0.0: -1.0, -0.5: -1.5, -1.0: -2.0}, n_seeds=4, noise=0.3, seed_sd=0.2,
                   rng=np.random.default_rng(2))
    full = analysis.fit_power_law(df, n_boot=300, seed=7).set_index("alpha")
    alone = analysis.fit_power_law(df[df["alpha"] == -0.5], n_boot=300, seed=7).iloc[0]
    assert full.loc[-0.5, "ci_low"] == alone["ci_low"]
    assert full.loc[-0.5, "ci_high"] == alone["ci_high"]
    diverged = df.assign(status=np.where(df["alpha"] == 0.0, "diverged", "ok"))
    again = analysis.fit_power_law(diverged, n_boot=300, seed=7).set_index("alpha")
    assert again.loc[-0.5, "ci_low"] == alone["ci_low"]


def test_excluded_ok_runs_are_counted_and_empty_table_fits_to_nothing():
    df = synthetic({0.0: -1.0, -1.0: -2.0}, n_seeds=2, noise=0.0, seed_sd=0.0,
                   rng=np.random.default_rng(0))
    df.loc[(df["alpha"] == 0.0) & (df["width"] == 64), "mse_test"] = [0.0, np.nan]
    df.loc[(df["alpha"] == 0.0) & (df["width"] == 91), "status"] = "diverged"
    fits = analysis.fit_power_law(df, n_boot=50).set_index("alpha")
    assert fits.loc[0.0, "n_excluded"] == 2 and fits.loc[-1.0, "n_excluded"] == 0
    empty = analysis.fit_power_law(df.iloc[:0], n_boot=50)
    assert len(empty) == 0 and {"alpha", "slope", "n_excluded"} <= set(empty.columns)
    assert len(analysis.compare_with_paper(empty)) == 5  # the paper's rows only
