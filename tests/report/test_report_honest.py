"""The A.2 report: the paper comparison only for the paper's protocol, verdicts that can say
'inconclusive', reports of diverged sweeps, fixed α colours, geometric training curves and
progress (issue 16, "Honest reports")."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from weakcorr import analysis, config, plots, report
from weakcorr.cli import main
from weakcorr.results import RunStore, run_id

from ..sweep._fake import fake_record
from ..sweep.test_plots_report import _small_sweep


@pytest.fixture
def no_figures(monkeypatch):
    def fake_save(fig, save_to, *, tight=True):
        import pathlib

        base = pathlib.Path(save_to)
        return [base.with_suffix(".png"), base.with_suffix(".pdf")]

    monkeypatch.setattr(plots, "save_figure", fake_save)


def _preset_configs(name: str, seeds=(0,), alphas=(0.0,)) -> list[dict]:
    cfg = config.load(name)
    return [config.run_config(cfg, w, a, s) for w in cfg.model.widths for a in alphas
            for s in seeds]


def _preset_table(name: str) -> pd.DataFrame:
    cfgs = _preset_configs(name)
    return analysis.table_from_records([{"run_id": run_id(c), "status": "ok", "config": c,
                                         "seed": c["seed"], "metrics": {"mse_test": 1.0}}
                                        for c in cfgs])


def test_paper_protocol_is_the_paper_a2_preset_and_cpu_differs_in_data_and_widths():
    assert analysis.paper_protocol_differences(_preset_table("paper-a2")) == {}
    assert analysis.paper_protocol_differences(_preset_table("cpu")) == {
        "data": "dataset 'mnist5k' vs 'mnist', n_train 4000 vs 60000, n_test 1000 vs 10000",
        "widths": "64–1024, 17 widths vs 2048–19484, 14 widths"}
    t = _preset_table("paper-a2").assign(loss="cross_entropy", lr0=0.05)
    assert list(analysis.paper_protocol_differences(t)) == ["lr0", "loss"]


def test_paper_verdict_is_inconclusive_for_a_vacuous_interval():
    # Before: 'paper in CI: yes' for [-4.35, +3.56], the only verdict the table had.
    fits = pd.DataFrame({"alpha": [0.0, -0.5, -1.0], "slope": [-0.4, -1.31, -2.0],
                         "ci_low": [-4.35, -1.36, -2.2], "ci_high": [3.56, -1.25, -1.8],
                         "n_runs": [10, 10, 10]})
    cmp = analysis.compare_with_paper(fits).set_index("alpha")
    assert bool(cmp.loc[0.0, "paper_in_ci"])
    assert cmp.loc[0.0, "verdict"].startswith("inconclusive (CI too wide: need more seeds/widths;")
    assert "7.91 wide, more than the 0.16 it must resolve" in cmp.loc[0.0, "verdict"]
    assert cmp.loc[-0.5, "verdict"] == "consistent"  # 0.11 wide < 0.16 to -1.14
    assert cmp.loc[-1.0, "verdict"] == "not consistent"  # -2.72 outside
    assert pd.isna(cmp.loc[-0.25, "verdict"])  # paper-only row


def _write_paper_dir(root):
    store = RunStore(root)
    for c in _preset_configs("paper-a2", seeds=(0, 1)):
        store.write(run_id(c), {**fake_record(c), "run_id": run_id(c), "config": c})
    return root


def test_report_of_the_paper_protocol_compares_with_verdicts(tmp_path, no_figures):
    root = _write_paper_dir(tmp_path / "p")
    rep = report.write_report(root, n_boot=50, progress=False)
    md = rep.markdown.read_text()
    assert "| paper in CI | verdict |" in md and "These runs follow the paper's protocol" in md
    assert "Not the paper's protocol" not in md
    assert rep.summary["paper_protocol_differences"] == {}
    assert {r["alpha"] for r in rep.summary["paper_comparison"]} == {0.0, -0.25, -0.5, -0.75,
                                                                      -1.0}


def test_report_of_another_protocol_says_how_it_differs(tmp_path, no_figures):
    root = _small_sweep(tmp_path / "s")
    md = report.write_report(root, n_boot=20, progress=False).markdown.read_text()
    assert "Not the paper's protocol: differs in data (dataset 'teacher' vs 'mnist'" in md
    assert "| paper |" not in md and "verdict" not in md
    assert ("Slopes of the Eq. 24 discrepancy C(f, f_lin) on the test set, from the same runs "
            "and the same f − f_lin as the mse_test table above") in md


def _diverging(alphas_diverge):
    def runner(configs, *, device):
        out = []
        for c in configs:
            r = fake_record(c)
            if c["training"]["alpha"] in alphas_diverge:
                r.update(status="diverged", diverged_step=3)
                r["metrics"] = {k: math.nan for k in r["metrics"]}
                r["logs"] = r["logs"][:1]
            out.append(r)
        return out
    return runner


@pytest.mark.slow
def test_report_of_a_sweep_whose_runs_all_diverged_is_written(tmp_path, capsys):
    """Before: a ValueError from matplotlib (log axes without a positive value)."""
    root = _small_sweep(tmp_path / "s", widths=(16, 32), alphas=(0,), seeds=1,
                        runner=_diverging({0}))
    assert main(["report", str(root), "--n-boot", "10"]) == 0
    md = (root / "report.md").read_text()
    assert "No run finished with status ok (2 diverged, 0 failed), so no slope can be fitted" in md
    assert "No slope for α = 0: all 2 runs diverged." in md
    assert (root / "figures" / "width_scaling.png").stat().st_size > 1000
    assert (root / "figures" / "training_curves.png").stat().st_size > 1000


def test_width_scaling_of_only_diverged_runs_draws():
    """The figure of the test above, drawn without saving (before: a ValueError at draw)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    t = _scaling_table([0.0]).assign(status="diverged", mse_test=math.nan)
    fig = plots.plot_width_scaling(t)
    FigureCanvasAgg(fig).draw()
    assert fig.axes[0].get_xscale() == "linear"
    assert [x.get_text() for x in fig.legends[0].get_texts()] == ["α = 0: all 6 runs diverged"]


def test_report_with_one_alpha_without_finite_values(tmp_path, no_figures):
    root = _small_sweep(tmp_path / "s", alphas=(0, -1), runner=_diverging({-1}))
    rep = report.write_report(root, n_boot=20, progress=False)
    md = rep.markdown.read_text()
    assert "No slope for α = -1: all 6 runs diverged." in md
    assert rep.summary["runs"]["diverged"] == 6
    fig = plots.plot_width_scaling(analysis.load_table(root))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[1] == "α = −1: all 6 runs diverged"


def _scaling_table(alphas):
    rows = [{"alpha": a, "width": n, "seed": s, "status": "ok", "mse_test": float(n) ** (a - 1)}
            for a in alphas for n in (16, 32, 64) for s in (0, 1)]
    return pd.DataFrame(rows)


def _colours(fig):
    return {t.get_text().split(":")[0]: h.get_color()
            for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}


def test_alpha_has_one_colour_in_every_sweep():
    """Before: colours followed the order of a sweep's α, so α = −0.5 changed colour."""
    a = _colours(plots.plot_width_scaling(_scaling_table([0.0, -0.5, -1.0])))
    b = _colours(plots.plot_width_scaling(_scaling_table([-0.5, -2.0])))
    assert a["α = −0.5"] == b["α = −0.5"] == plots.ALPHA_COLORS[-0.5]
    assert len(set(a.values())) == 3
    assert plots.alpha_color(-0.5 + 1e-10) == plots.ALPHA_COLORS[-0.5]
    assert plots.alpha_color(-2.0) == plots.alpha_color(-2.0) != plots.alpha_color(0.5)


def test_training_curves_are_geometric_means_on_shared_axes():
    rows = []
    for w, scale in ((16, 1.0), (32, 1e-3)):
        for seed, loss in ((0, 1.0), (1, 100.0)):
            for step in (0, 10, 20):
                rows.append({"run_id": f"{w}{seed}", "status": "ok", "width": w, "alpha": 0.0,
                             "seed": seed, "step": step, "loss_f": loss * scale,
                             "loss_lin": loss * scale, "discrepancy": scale * (seed + 1) * 1e-4})
    fig = plots.plot_training_curves(pd.DataFrame(rows))
    panels = [ax for ax in fig.axes if ax.get_title()]
    twins = [ax for ax in fig.axes if not ax.get_title()]
    y = panels[0].get_lines()[0].get_ydata()
    np.testing.assert_allclose(y, 10.0)  # sqrt(1 * 100); the arithmetic mean is 50.5
    np.testing.assert_allclose(twins[1].get_lines()[0].get_ydata(), 1e-7 * math.sqrt(2))
    assert panels[0].get_ylim() == panels[1].get_ylim()
    assert twins[0].get_ylim() == twins[1].get_ylim() and twins[0].get_yscale() == "log"
    assert "geometric means over seeds" in fig.legends[0].get_title().get_text()


def test_report_progress_on_stderr(tmp_path, capsys, monkeypatch, no_figures):
    root = _small_sweep(tmp_path / "s", widths=(16, 32), alphas=(0,), seeds=2, steps=10)
    report.write_report(root, n_boot=20, progress=False)
    assert capsys.readouterr().err == ""
    seen = []
    report.write_report(root, n_boot=20, progress=seen.append)
    assert seen[0] == "reading the run files" and seen[-1] == "done"
    monkeypatch.setattr(report, "PROGRESS_AFTER_S", 0.0)
    report.write_report(root, n_boot=20)
    err = capsys.readouterr().err.splitlines()  # not a tty: one line per stage
    assert err[0].startswith("report: reading the run files (") and err[-1].startswith(
        "report: done (")
    with pytest.raises(TypeError, match="`progress` must be True, False or a callable"):
        report.write_report(root, progress="yes")


def test_report_cli_prints_the_protocol_line_or_the_paper_verdicts(tmp_path, capsys, no_figures):
    root = _small_sweep(tmp_path / "s", widths=(16, 32), alphas=(0,), seeds=2)
    assert main(["report", str(root), "--n-boot", "10"]) == 0
    out = capsys.readouterr().out
    assert ("mse_test ~ width^slope per alpha (not the paper's protocol: differs in data, "
            "steps, batch, widths; not compared with Fig. 4):") in out
    assert "alpha=0: slope" in out and "(paper" not in out
    paper = _write_paper_dir(tmp_path / "p")
    assert main(["report", str(paper), "--n-boot", "10"]) == 0
    out = capsys.readouterr().out
    assert "(paper: Fig. 4, widths 2048-19484):" in out and "(paper -1.14: " in out
