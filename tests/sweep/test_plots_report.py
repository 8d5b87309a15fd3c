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
            with open(fname, "wb") as fh:
                fh.write(b"%PDF half")
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
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
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
    assert "48 of 48 runs present: 36 ok, 0 diverged, 12 failed" in md
    assert "-1.14" in md and "-2.72" in md
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
    assert summary["runs"] == {"expected": 48, "present": 48, "ok": 36, "diverged": 0, "failed": 12}
    slopes = {r["alpha"]: r["slope"] for r in summary["fits"]}
    assert slopes[0.0] == pytest.approx(-1.0, abs=0.2) and slopes[-1.0] == pytest.approx(-2.5, abs=0.2)
    assert len(summary["problems"]) == 12 and summary["config"]["name"] == "fake"
    assert {r["alpha"] for r in summary["paper_comparison"]} == {0.0, -0.25, -0.5, -0.75, -1.0}


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
