"""`weakcorr correlations`: records on disk, JSON output, resume, errors (tiny widths)."""

from __future__ import annotations

import json

import pytest
import torch

from weakcorr import _corr_experiment as experiment
from weakcorr import cli

ARGS = [
    "correlations", "--width", "4", "8", "--depth", "1", "--activation", "tanh",
    "--parameterization", "ntk", "--dataset", "mnist5k", "--n-inputs", "3", "--orders", "2", "3",
    "--seeds", "2", "--dtype", "float64", "--quiet",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("corr")
    return out, cli.main([*ARGS, "--out", str(out)])


def test_one_json_record_per_width_and_seed(sweep, capsys):
    out, rc = sweep
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"corr_w{w}_s{s}.json" for w in (4, 8) for s in (0, 1)]  # no temp files
    record = json.loads((out / "corr_w8_s1.json").read_text())
    assert record["schema_version"] == experiment.SCHEMA_VERSION
    assert record["status"] == "ok" and record["width"] == 8 and record["seed"] == 1
    assert record["dtype"] == "float64" and record["device"] == "cpu"
    assert sorted(record["metrics"]) == ["C2", "C3"]
    values = torch.tensor(record["metrics"]["C2"]["values"])
    assert values.shape[0] == 3 and bool(torch.isfinite(values).all())
    assert record["metrics"]["C2"]["mean_abs"] == pytest.approx(float(values.abs().mean()))


def test_record_values_are_the_library_diagonal(sweep):
    out, _ = sweep
    record = json.loads((out / "corr_w4_s0.json").read_text())
    from weakcorr import correlations, data, functional, models

    ds = data.load("mnist5k", n_train=3, n_test=1, seed=0)
    X = torch.as_tensor(ds.X_train).reshape(3, -1).double()
    model = models.mlp(X.shape[1], [4], record["metrics"]["C2"]["values"][0].__len__(),
                       activation="tanh", parameterization="ntk", seed=0, dtype=torch.float64)
    diag = correlations.diagonal(functional(model), X, orders=(2, 3), lr=1.0)
    for k in (2, 3):
        torch.testing.assert_close(
            torch.tensor(record["metrics"][f"C{k}"]["values"], dtype=torch.float64), diag[k],
            rtol=1e-12, atol=0,
        )


def test_mlp_method_gives_the_same_records(sweep, tmp_path):
    out, _ = sweep
    args = [*ARGS[:3], *ARGS[4:], "--seeds", "1", "--method", "mlp", "--out", str(tmp_path)]
    assert cli.main(args) == 0
    fast = json.loads((tmp_path / "corr_w4_s0.json").read_text())
    generic = json.loads((out / "corr_w4_s0.json").read_text())
    assert fast["config"]["method"] == "mlp"
    for k in ("C2", "C3"):
        torch.testing.assert_close(torch.tensor(fast["metrics"][k]["values"]),
                                   torch.tensor(generic["metrics"][k]["values"]), rtol=1e-12, atol=0)


def test_json_flag_prints_one_object_and_resume_reuses_records(sweep, capsys):
    out, _ = sweep
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert cli.main([*ARGS, "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)  # stdout is exactly one JSON document
    assert len(payload["runs"]) == 4 and "values" not in payload["runs"][0]["metrics"]["C2"]
    assert set(payload["summary"]) == {"C2", "C3"}
    assert payload["summary"]["C2"]["widths"] == [4, 8]
    assert captured.err == ""
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # resumed


def test_progress_bar_only_on_a_tty_and_not_with_quiet(monkeypatch, capsys):
    args = [a for a in ARGS if a != "--quiet"][:3] + ARGS[4:-1] + ["--seeds", "1"]
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert cli.main(args) == 0
    assert "correlations" in capsys.readouterr().err  # tqdm's description
    assert cli.main([*args, "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_table_is_printed(tmp_path, capsys):
    assert cli.main([*ARGS[:3], *ARGS[4:], "--seeds", "1", "--orders", "2"]) == 0
    out = capsys.readouterr().out
    assert "mean|C2|" in out and "width" in out


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--orders", "0"], "`--orders` must be one or more integers in 1..6, got '0'"),
        (["--orders", "2", "2"], "`--orders` must not repeat an order, got '2 2'"),
        (["--width", "0"], "`--width` must be one or more integers >= 1, got '0'"),
        (["--lr", "-1"], "`--lr` must be a finite number > 0"),
        (["--max-memory-gb", "nan"], "`--max-memory-gb` must be a finite number > 0, got nan"),
        (["--activation", "swish"], "`--activation` must be one of relu, gelu"),
        (["--dataset", "imagenet"], "`--dataset` must be one of mnist5k"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--seeds", "0"],
         "`--device` is 'cuda:7' but CUDA is not available here" if not torch.cuda.is_available()
         else "`--seeds` must be >= 1"),
        (["--device", "gpu"], ("`--device` must be cpu, cuda or cuda:K (a CUDA device index), "
                               "got 'gpu'")),
        (["--device", "meta"], "`--device` must be cpu, cuda or cuda:K"),
        (["--data-seed", "-1"], "`--data-seed` must be an integer >= 0 (and < 2**63), got -1"),
        (["--seed-offset", "-1"], "`--seed-offset` must be an integer >= 0 (and < 2**63), got -1"),
        (["--seed-offset", str(2**63)], "`--seed-offset` must be an integer >= 0"),
        (["--seed-offset", str(2**63 - 1)],
         "`--seed-offset` 9223372036854775807 with `--seeds` 2 gives seeds of 2**63 or more"),
        (["--n-inputs", "5000"], ("`--n-inputs` 5000 is too many for --dataset 'mnist5k': it has "
                                  "5000 samples and 1 is drawn as a test sample; pass --n-inputs "
                                  "4999 or fewer.")),
        (["--dataset", "mnist"], "`--data-dir` is required for dataset 'mnist'"),
    ],
    ids=["orders", "orders-repeated", "width", "lr", "max-memory", "activation", "dataset",
         "device", "device-gpu", "device-meta", "data-seed", "seed-offset", "seed-offset-big",
         "seeds-past-2**63", "n-inputs", "data-dir"],
)
def test_bad_arguments_exit_2_with_the_argument_named(extra, match, capsys, tmp_path):
    out = tmp_path / "out"
    assert cli.main([*ARGS, *extra, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weakcorr correlations: error: "), captured.err
    assert match in lines[0]
    assert captured.out == "" and not out.exists()


def test_out_that_is_a_file_or_under_one_is_refused_before_any_work(tmp_path, capsys,
                                                                     monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("computed before checking --out")

    monkeypatch.setattr(experiment, "_load_inputs", no_work)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert cli.main([*ARGS, "--out", str(afile)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"weakcorr correlations: error: `--out` {str(afile)!r}: {str(afile)!r} is a file, not a "
        "directory; pass a new or existing directory as --out")
    assert cli.main([*ARGS, "--out", str(afile / "sub")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"weakcorr correlations: error: `--out` {str(afile / 'sub')!r}: {str(afile)!r} is a "
        "file, so no directory can be made under it; pass a directory path as --out")
    (tmp_path / "sweep.json").write_text("{}")
    assert cli.main([*ARGS, "--out", str(tmp_path)]) == 2
    assert "is a `weakcorr sweep`/`a1` directory" in capsys.readouterr().err
    assert afile.read_text() == "mine"


def test_out_with_records_of_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "corr"
    base = [*ARGS[:3], *ARGS[4:], "--seeds", "1", "--orders", "2", "--out", str(out)]
    assert cli.main(base) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert cli.main([*base, "--n-inputs", "4", "--activation", "gelu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"weakcorr correlations: error: `--out` {str(out)!r} holds records of "
                          "other settings (--activation 'tanh' in corr_w4_s0.json, 'gelu' now; "
                          "--n-inputs 3 in corr_w4_s0.json, 4 now)"), err
    assert "Pass a new directory as --out" in err and len(err.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing overwritten
    # More widths and seeds (and another device or memory budget) may go into the same folder.
    assert cli.main([*base, "--width", "4", "16", "--seeds", "2", "--max-memory-gb", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*before, "corr_w4_s1.json", "corr_w16_s0.json", "corr_w16_s1.json"])
    assert {n: (out / n).read_bytes() for n in before} == before  # w4_s0 reused


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    experiment.write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        experiment.write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
