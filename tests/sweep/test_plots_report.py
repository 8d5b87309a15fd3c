"""Figures and the report of a (fake) sweep directory; the report and sweep CLI commands."""

from __future__ import annotations

import json

import pytest

from weakcorr import analysis, config, plots, sweep
from weakcorr.cli import main

from ._fake import CountingRunner


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fake_sweep")
    cfg = config.load({
        "name": "fake", "description": "A fake sweep.",
        "model": {"widths": [16, 32, 64, 128]},
        "data": {"name": "teacher", "n_train": 64, "n_test": 32},
        "training": {"steps": 20, "batch_size": 16, "lr0": 0.1, "alphas": [0, -0.5, -1]},
        "seeds": 4, "logging": {"every": 5}})
    sweep.run_sweep(cfg, str(tmp_path / "s"), check_data=False,
                    runner=CountingRunner(str(tmp_path / "c.txt"), fail_seeds=(3,)))
    return tmp_path / "s"


def test_save_figure_is_atomic(tmp_path, monkeypatch):
    """An interrupted save leaves the previous figure intact and no temp file behind."""
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([1, 2], [1, 4])
    png, pdf = plots.save_figure(fig, tmp_path / "f")
    old = pdf.read_bytes()
    assert png.read_bytes().startswith(b"\x89PNG") and old.startswith(b"%PDF")

    real = Figure.savefig

    def crash_on_pdf(self, fname, **kw):
        if kw.get("format") == "pdf":
            fname.write(b"%PDF half")  # save_figure passes the temp file's object
            raise KeyboardInterrupt
        return real(self, fname, **kw)

    monkeypatch.setattr(Figure, "savefig", crash_on_pdf)
    with pytest.raises(KeyboardInterrupt):
        plots.save_figure(fig, tmp_path / "f")
    assert pdf.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]


def test_width_scaling_figure(sweep_dir, tmp_path):
    df = analysis.load_table(sweep_dir)
    fig = plots.plot_width_scaling(df, save_to=tmp_path / "fig" / "w")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == 3 and labels[0].startswith("α = 0: slope −1.0")
    assert all("[" in lab for lab in labels)  # CI shown
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--" and len(ln.get_xdata())]
    assert len(dashed) == 3
    assert (tmp_path / "fig" / "w.png").stat().st_size > 10_000
    assert (tmp_path / "fig" / "w.pdf").read_bytes().startswith(b"%PDF")


def test_training_curves_figure(sweep_dir):
    logs = analysis.load_logs(sweep_dir)
    fig = plots.plot_training_curves(logs, alpha=-0.5)
    panels = [ax for ax in fig.axes if ax.get_title()]
    twins = [ax for ax in fig.axes if not ax.get_title()]
    assert [ax.get_title() for ax in panels] == [f"α = −0.5, n = {w} (3 seeds)"
                                                 for w in (16, 32, 64, 128)]
    assert all(len(ax.get_lines()) == 2 for ax in panels)  # losses of f and f_lin
    assert all(len(ax.get_lines()) == 1 and ax.get_yscale() == "log" for ax in twins)
    fig = plots.plot_training_curves(logs, max_widths=2)
    assert [ax.get_title().split(" (")[0] for ax in fig.axes if ax.get_title()] == [
        f"α = {a}, n = {w}" for a in ("0", "−0.5", "−1") for w in (16, 128)]


@pytest.fixture(scope="module")
def written(sweep_dir):
    """`weakcorr report DIR --json` once: the report files and the printed summary."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(sweep_dir), "--n-boot", "100", "--json"]) == 0
    return sweep_dir, json.loads(out.getvalue())


def test_report_files(written):
    root, printed = written
    md = (root / "report.md").read_text()
    assert md.startswith("# Sweep report: fake")
    assert ("48 runs present: 36 ok, 0 diverged, 12 failed; sweep.json lists 48 runs, "
            "all present.") in md
    # Teacher data at widths 16-128: not the paper's protocol, so no paper column or verdict.
    assert ("Not the paper's protocol: differs in data (dataset 'teacher' vs 'mnist', n_train "
            "64 vs 60000, n_test 32 vs 10000); steps (steps 20 vs 250); batch (batch_size 16 vs "
            "128); widths (16–128, 4 widths vs 2048–19484, 14 widths).") in md
    assert "paper in CI" not in md
    assert "![mse_test vs width](figures/width_scaling.png)" in md
    assert "![training curves of f and f_lin](figures/training_curves.png)" in md
    assert md.count("| failed |") == 12 and "boom at seed 3" in md
    summary = json.loads((root / "summary.json").read_text())
    assert summary == printed
    for fig in summary["figures"]:
        assert (root / fig).stat().st_size > 1000
    assert sorted(summary["figures"]) == [
        "figures/training_curves.pdf", "figures/training_curves.png", "figures/width_scaling.pdf",
        "figures/width_scaling.png"]
    assert summary["runs"] == {"expected": 48, "present": 48, "in_manifest": 48, "missing": 0,
                               "not_in_manifest": 0, "unreadable": 0, "repeats_left_out": 0,
                               "ok": 36, "diverged": 0,
                               "failed": 12}
    slopes = {r["alpha"]: r["slope"] for r in summary["fits"]}
    assert slopes[0.0] == pytest.approx(-1.0, abs=0.2)
    assert slopes[-1.0] == pytest.approx(-2.5, abs=0.2)
    assert len(summary["problems"]) == 12 and summary["config"]["name"] == "fake"
    assert summary["paper_comparison"] == []
    assert sorted(summary["paper_protocol_differences"]) == ["batch", "data", "steps", "widths"]


@pytest.mark.parametrize("argv,fragment", [
    (["report", "{tmp}/nothing"], "no run files"),
    (["report", "{tmp}", "--metric", "loss"], "`--metric` must be one of"),
    (["sweep", "demo", "--out", "{tmp}/o", "--set", "training.alphas=[0, x]"],
     "`training.alphas[1]` must be a finite number"),
    (["sweep", "demo", "--out", "{tmp}/o", "--set", "model.widthz=3"],
     "unknown key `model.widthz`"),
    (["sweep", "{tmp}/missing.yaml", "--out", "{tmp}/o"], "no config file"),
    (["sweep", "demo", "--out", "{tmp}/o", "--workers", "0"], "`--workers` must be >= 1"),
    (["sweep", "demo", "--out", "{tmp}/o", "--device", "tpu"], "`device` must be 'cpu' or"),
], ids=["report-empty", "report-metric", "sweep-alpha", "sweep-key", "sweep-file", "workers",
        "device"])
def test_cli_errors_one_line_exit_2_nothing_written(tmp_path, capsys, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


# --- review fixes -------------------------------------------------------------------------------

def _small_sweep(root, *, widths=(16, 32, 64), alphas=(0, -1), seeds=2, steps=20, every=5,
                 runner=None, **training):
    from ._fake import fake_runner

    cfg = config.load({
        "name": "small", "model": {"widths": list(widths)},
        "data": {"name": "teacher", "n_train": 64, "n_test": 32},
        "training": {"steps": steps, "batch_size": 16, "lr0": 0.1, "alphas": list(alphas),
                     **training},
        "seeds": seeds, "logging": {"every": every}})
    sweep.run_sweep(cfg, str(root), check_data=False, runner=runner or fake_runner)
    return root


@pytest.fixture
def no_figures(monkeypatch):
    """Skip drawing and saving figures (most of a report's time) in tests of its text."""
    import pathlib

    def fake_save(fig, save_to, *, tight=True):
        base = pathlib.Path(save_to)
        return [base.with_suffix(".png"), base.with_suffix(".pdf")]

    monkeypatch.setattr(plots, "save_figure", fake_save)


def _cli(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_report_cli_with_one_width_prints_no_slope(tmp_path, capsys, no_figures):
    root = _small_sweep(tmp_path / "s", widths=(16,))
    rc, out, err = _cli(["report", str(root), "--n-boot", "20"], capsys)
    assert rc == 0, err
    assert "alpha=0: slope – (needs ≥ 2 widths)" in out
    assert "needs ≥ 2 widths" in (root / "report.md").read_text()


def test_report_refuses_mixed_protocols_before_writing(tmp_path, capsys):
    import shutil

    root = _small_sweep(tmp_path / "s")
    other = _small_sweep(tmp_path / "o", steps=10, seeds=1)
    for p in (other / "runs").glob("*.json"):
        shutil.copy(p, root / "runs" / p.name)
    rc, _, err = _cli(["report", str(root)], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert "differ in more than width, α and seed (steps: 20 (12 runs), 10 (6 runs))" in err
    assert "directory of its own" in err
    assert not (root / "report.md").exists() and not (root / "figures").exists()


def test_report_counts_runs_outside_the_manifest(tmp_path, capsys, no_figures):
    """Same protocol, more seeds copied in: never 'N of M' with N > M."""
    import shutil

    root = _small_sweep(tmp_path / "s", seeds=1)
    more = _small_sweep(tmp_path / "m", seeds=3)
    for p in (more / "runs").glob("*.json"):
        shutil.copy(p, root / "runs" / p.name)
    rc, out, err = _cli(["report", str(root), "--n-boot", "20", "--json"], capsys)
    assert rc == 0, err
    runs = json.loads(out)["runs"]
    assert runs["present"] == 18 and runs["in_manifest"] == 6 and runs["not_in_manifest"] == 12
    assert runs["expected"] >= runs["present"]
    assert ("18 runs present: 18 ok, 0 diverged, 0 failed; sweep.json lists 6 runs, all present, "
            "and 12 present runs are not among them.") in (root / "report.md").read_text()


@pytest.mark.parametrize("where", ["manifest", "records"])
def test_report_refuses_a1_directory_and_keeps_its_report(tmp_path, capsys, where):
    root = tmp_path / "a1"
    (root / "runs").mkdir(parents=True)
    kind = {"kind": "a1"} if where == "records" else {}
    (root / "runs" / "abc.json").write_text(json.dumps(
        {**kind, "status": "ok", "seed": 0, "config": {"model": {"width": 8}}, "metrics": {}}))
    if where == "manifest":
        (root / "sweep.json").write_text(json.dumps({"kind": "a1", "config": {"name": "x"}}))
    (root / "report.md").write_text("# A.1 report")
    rc, _, err = _cli(["report", str(root)], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert "is an App. A.1 directory" in err
    assert f"use `weakcorr a1 CONFIG --out {root} --report-only`" in err
    assert (root / "report.md").read_text() == "# A.1 report"
    assert not (root / "summary.json").exists() and not (root / "figures").exists()


def test_report_keeps_alpha_one_third_in_the_slope_table(tmp_path, capsys, no_figures):
    root = _small_sweep(tmp_path / "s", alphas=(0, -1 / 3))
    rc, out, err = _cli(["report", str(root), "--n-boot", "20"], capsys)
    assert rc == 0, err
    md = (root / "report.md").read_text()
    main_table = md.split("## Slopes of mse_test")[1].split("Slopes of the Eq. 24")[0]
    assert "| -0.333333 | -1.3" in main_table  # fake slope −1 + α
    assert "alpha=-0.333333: slope -1.3" in out


@pytest.mark.parametrize("metric", ["mse_train", "c_test"])
def test_report_compares_with_paper_only_for_mse_test(tmp_path, capsys, metric, no_figures):
    root = _small_sweep(tmp_path / "s")
    rc, out, err = _cli(["report", str(root), "--metric", metric, "--n-boot", "20"], capsys)
    assert rc == 0, err
    md = (root / "report.md").read_text()
    assert "paper in CI" not in md and "and the paper's Fig. 4" not in md
    assert f"they are not compared with {metric}" in md
    assert "(paper" not in out and "alpha=0: slope" in out
    summary = json.loads((root / "summary.json").read_text())
    assert summary["paper_comparison"] == [] and summary["metric"] == metric


def test_report_n_boot_and_seed_checks_agree_with_the_fit(tmp_path, capsys, no_figures):
    root = _small_sweep(tmp_path / "s")
    rc, _, err = _cli(["report", str(root), "--n-boot", "1"], capsys)
    assert rc == 2 and "`--n-boot` must be >= 2 (bootstrap replicates), got 1" in err
    rc, _, err = _cli(["report", str(root), "--seed", "-1"], capsys)
    assert rc == 2 and "`--seed` must be >= 0, got -1" in err
    assert not (root / "report.md").exists()
    rc, _, err = _cli(["report", str(root), "--n-boot", "2"], capsys)
    assert rc == 0, err


def test_report_of_unreadable_runs_and_excluded_runs(tmp_path, capsys, no_figures):
    bad = tmp_path / "bad"
    (bad / "runs").mkdir(parents=True)
    (bad / "runs" / "x.json").write_text("garbage")
    rc, _, err = _cli(["report", str(bad)], capsys)
    assert rc == 2 and "1 run file(s) in" in err and "none readable" in err
    root = _small_sweep(tmp_path / "s")
    for p in sorted((root / "runs").glob("*.json"))[:2]:
        rec = json.loads(p.read_text())
        rec["metrics"]["mse_test"] = 0.0
        p.write_text(json.dumps(rec))
    rc, _, err = _cli(["report", str(root), "--n-boot", "20"], capsys)
    assert rc == 0, err
    assert "2 ok run(s) left out of the fits because their mse_test is ≤ 0 or not finite" in (
        root / "report.md").read_text()


def _fig4_table(*, diverged_alpha=None):
    import numpy as np
    import pandas as pd

    rows = []
    for a, s in ((0.0, -1.0), (-0.5, -1.5), (-1.0, -2.5)):
        for seed in range(3):
            for n in (16, 32, 64, 128):
                y = float(np.exp(1 + s * np.log(n) + (-1.5, 0.0, 1.5)[seed]))
                rows.append({"alpha": a, "width": n, "seed": seed, "mse_test": y,
                             "status": "diverged" if a == diverged_alpha else "ok"})
    return pd.DataFrame(rows)


def _renderer(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # runs the layout engine
    return canvas.get_renderer()


def test_width_scaling_plots_geometric_means_and_legend_outside():
    import numpy as np

    df = _fig4_table()
    fig = plots.plot_width_scaling(df)
    ax = fig.axes[0]
    dots = [ln for ln in ax.get_lines() if ln.get_marker() == "o" and ln.get_linestyle() == "None"
            and len(ln.get_xdata())]
    assert len(dots) == 3
    # Seeds spread ×e^±1.5 around the power law: the geometric mean lies on it.
    np.testing.assert_allclose(dots[0].get_ydata(), np.exp(1 - np.log([16, 32, 64, 128])))
    assert ax.get_legend() is None and len(fig.legends) == 1
    leg = fig.legends[0]
    assert "geometric mean" in leg.get_title().get_text()
    renderer = _renderer(fig)
    lb, ab = leg.get_window_extent(renderer), ax.get_window_extent(renderer)
    assert lb.x0 >= ab.x1 or lb.y1 <= ab.y0  # beside or below the axes, never on the data


def test_width_scaling_colours_are_stable_and_diverged_alpha_is_named():
    full = plots.plot_width_scaling(_fig4_table())
    part = plots.plot_width_scaling(_fig4_table(diverged_alpha=0.0))
    handles = {f: f.legends[0].legend_handles for f in (full, part)}
    assert [h.get_color() for h in handles[full]] == [h.get_color() for h in handles[part]]
    labels = [t.get_text() for t in part.legends[0].get_texts()]
    assert labels[0] == "α = 0: all 12 runs diverged" and labels[1].startswith("α = −0.5: slope")


def test_width_scaling_by_a_string_column():
    df = _fig4_table().assign(activation=lambda d: ["relu" if s % 2 else "gelu"
                                                     for s in d["seed"]])
    fig = plots.plot_width_scaling(df[df["alpha"] == 0.0], by="activation")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [lab.split(":")[0] for lab in labels] == ["activation = gelu", "activation = relu"]


def test_training_curves_with_partial_log_rows(sweep_dir):
    """eval_every not a multiple of every: rows {step, mse_test} must not blank the curves."""
    import numpy as np
    import pandas as pd

    logs = analysis.load_logs(sweep_dir)
    extra = logs.drop_duplicates(["run_id"])[["run_id", "status", "width", "alpha", "seed"]]
    partial = pd.concat([extra.assign(step=s, mse_test=1e-6 * (s + 1)) for s in (3, 7, 13)])
    fig = plots.plot_training_curves(pd.concat([logs, partial], ignore_index=True),
                                     alpha=np.int64(0))
    lines = [ln for ax in fig.axes for ln in ax.get_lines()]
    assert len(lines) == 4 * 4  # 4 widths × (loss_f, loss_lin, discrepancy, mse_test)
    for ln in lines:
        y = np.asarray(ln.get_ydata(), dtype=float)
        assert len(y) >= 3 and np.isfinite(y).all()
    assert "test MSE(f, f_lin), Eq. 30 (right)" in [t.get_text()
                                                     for t in fig.legends[0].get_texts()]
    with pytest.raises(ValueError, match=r"`alpha` -0.3 has no finished runs in the logs; "
                                         r"α with finished runs: 0, -0.5, -1"):
        plots.plot_training_curves(logs, alpha=-0.3)


@pytest.mark.parametrize("n_widths", [1, 2])
def test_training_curves_fit_their_figure(sweep_dir, n_widths):
    logs = analysis.load_logs(sweep_dir)
    fig = plots.plot_training_curves(logs, alpha=-1.0, max_widths=n_widths)
    renderer = _renderer(fig)
    tight = fig.get_tightbbox(renderer)  # inches
    w, h = fig.get_size_inches()
    assert tight.x0 >= -0.01 and tight.y0 >= -0.01 and tight.x1 <= w + 0.01 and tight.y1 <= h + 0.01


def test_float32_precision_note_names_the_runs_below_the_floor():
    """float32 MSE values under report.FLOAT32_FLOOR get a note (with the α and widths);
    float64 runs, other statuses and other metrics do not."""
    import pandas as pd

    from weakcorr import report

    table = pd.DataFrame({
        "status": ["ok", "ok", "ok", "diverged", "ok"],
        "dtype": ["float32", "float32", "float32", "float32", "float64"],
        "alpha": [-1.0, -1.0, 0.0, -1.0, -1.0], "width": [512, 1024, 1024, 2048, 4096],
        "mse_test": [5e-12, 2e-13, 1e-5, 1e-14, 1e-15],
    })
    note = report._float32_note(table, "mse_test")
    assert note is not None
    assert note.startswith("Precision: 1 float32 run(s) have mse_test below 1e-12 (below 1e-09 "
                           "from width 2048) (α = -1: 1 (widths 1024–1024))")
    wide = pd.DataFrame({"status": ["ok", "ok", "ok"], "dtype": ["float32"] * 3,
                         "alpha": [-1.0, -0.5, -1.0], "width": [2048, 2048, 1024],
                         "mse_test": [3e-12, 3e-8, 3e-12]})  # 3e-12: float32's at 2048, α = -1
    assert "(α = -1: 1 (widths 2048–2048))" in report._float32_note(wide, "mse_test")
    assert report._float32_note(table.assign(mse_test=1e-3), "mse_test") is None
    assert report._float32_note(table, "acc_f_test") is None
    assert report._float32_note(table.assign(dtype="float64"), "mse_test") is None


def test_report_counts_each_grid_point_once(tmp_path, capsys, no_figures):
    """Runs that repeat a (width, α, seed) with other logging (another run id) count once."""
    import shutil

    root = _small_sweep(tmp_path / "s")
    again = _small_sweep(tmp_path / "a", every=10)
    for p in (again / "runs").glob("*.json"):
        shutil.copy(p, root / "runs" / p.name)
    rc, out, err = _cli(["report", str(root), "--n-boot", "50", "--json"], capsys)
    assert rc == 0, err
    got = json.loads(out)
    assert got["runs"]["present"] == 24 and got["runs"]["repeats_left_out"] == 12
    assert [f["n_runs"] for f in got["fits"]] == [6, 6]
    assert "12 run(s) repeat a (width, α, seed) already present" in (root / "report.md").read_text()
    rc, out, _ = _cli(["report", str(tmp_path / "a"), "--n-boot", "50", "--json"], capsys)
    alone = json.loads(out)["fits"]
    assert [f["slope"] for f in got["fits"]] == pytest.approx([f["slope"] for f in alone])
