"""Bad input through `weakcorr sweep`: one line naming the field and the fix, exit code 2, and
nothing written (the out dir is never created)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import yaml

from weakcorr import cli, data, experiments

BASE = {
    "name": "bad",
    "model": {"widths": [8, 16], "depth": 2},
    "data": {"name": "digits", "n_train": 64, "n_test": 32},
    "training": {"steps": 5, "batch_size": 16, "lr0": 0.1, "alphas": [0, -1]},
    "seeds": 1,
    "logging": {"every": 5},
}


def _write_config(tmp_path: pathlib.Path, section: str | None = None, key: str | None = None,
                  value: object = None, *, text: str | None = None) -> str:
    path = tmp_path / "config.yaml"
    if text is None:
        raw = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
        if section is not None:
            raw[section][key] = value
        text = yaml.safe_dump(raw)
    path.write_text(text)
    return str(path)


def _idx_folder(folder: pathlib.Path, *, corrupt: bool) -> str:
    """MNIST-style IDX files: valid tiny ones, or ones whose image file has a bad magic."""
    folder.mkdir()
    for split, n in (("train", 100), ("t10k", 100)):
        images = b"\x00\x00\x08\x03" + np.array([n, 28, 28], ">u4").tobytes() + bytes(n * 784)
        labels = b"\x00\x00\x08\x01" + np.array([n], ">u4").tobytes() + bytes(range(10)) * (n // 10)
        (folder / f"{split}-images-idx3-ubyte").write_bytes(b"junk" + images[4:] if corrupt
                                                            else images)
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(labels)
    return str(folder)


def _sweep(capsys, tmp_path, config: str, *flags: str) -> tuple[int, str, str]:
    out = tmp_path / "out"
    rc = cli.main(["sweep", config, "--out", str(out), "--quiet", *flags])
    captured = capsys.readouterr()
    assert not out.exists(), f"{out} was created"
    return rc, captured.out, captured.err


def _check(rc: int, out: str, err: str, *needles: str) -> None:
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("weakcorr sweep: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


CONFIG_CASES = [
    ("malformed-yaml", {"text": "model: {widths: [8, 16}\n"}, ["is not valid YAML", "line 1"]),
    ("not-a-mapping", {"text": "- 1\n- 2\n"}, ["must hold a YAML mapping"]),
    ("wrong-type", {"args": ("training", "steps", "ten")},
     ["`training.steps`", "an integer >= 1", "'ten' (str)"]),
    ("unknown-key", {"args": ("model", "widht", [8])},
     ["unknown key `model.widht`", "valid keys: widths"]),
    ("zero-width", {"args": ("model", "widths", [0, 8])},
     ["`model.widths[0]`", "an integer >= 1", "got 0"]),
    ("negative-width", {"args": ("model", "widths", [8, -16])},
     ["`model.widths[1]`", "an integer >= 1", "got -16"]),
    ("alpha-not-a-number", {"args": ("training", "alphas", [0, "fast"])},
     ["`training.alphas[1]`", "a finite number", "'fast'"]),
    ("alpha-nan", {"text": yaml.safe_dump(BASE).replace("- -1", "- .nan")},
     ["`training.alphas[1]`", "a finite number"]),
    ("missing-section", {"text": "model: {widths: [8]}\n"}, ["section `data` is missing"]),
]


@pytest.mark.parametrize("case", [c[1] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(capsys, tmp_path, case):
    needles = next(n for _, c, n in CONFIG_CASES if c is case)
    config = _write_config(tmp_path, *case.get("args", ()), text=case.get("text"))
    _check(*_sweep(capsys, tmp_path, config), *needles)


def test_bad_override_value(capsys, tmp_path):
    _check(*_sweep(capsys, tmp_path, _write_config(tmp_path), "--set", "model.widths=[16, 0]"),
           "`model.widths[1]`", "got 0")


def test_missing_config_file(capsys, tmp_path):
    _check(*_sweep(capsys, tmp_path, str(tmp_path / "nope.yaml")), "no config file", "presets:")


@pytest.mark.parametrize("kind", ["empty-folder", "no-folder", "corrupt-file", "no-data-dir"])
def test_missing_or_corrupt_dataset(capsys, tmp_path, kind):
    overrides = ["--set", "data.name=mnist"]
    if kind == "empty-folder":
        (tmp_path / "mnist").mkdir()
        overrides += ["--set", f"data.data_dir={tmp_path / 'mnist'}"]
        needles = ["`data.data_dir`", "missing train-images-idx3-ubyte", "the folder must hold"]
    elif kind == "no-folder":
        overrides += ["--set", f"data.data_dir={tmp_path / 'nowhere'}"]
        needles = ["`data.data_dir`", "does not exist"]
    elif kind == "corrupt-file":
        overrides += ["--set", f"data.data_dir={_idx_folder(tmp_path / 'mnist', corrupt=True)}"]
        needles = ["`data.data_dir`", "not an unsigned-byte IDX file", "replace it"]
    else:
        needles = ["`data.data_dir` is required", "--set data.data_dir="]
    _check(*_sweep(capsys, tmp_path, _write_config(tmp_path), *overrides), *needles)


def test_valid_idx_folder_is_accepted(tmp_path):
    """The byte-built IDX files above are valid when not corrupted (so the test can fail)."""
    folder = _idx_folder(tmp_path / "mnist", corrupt=False)
    ds = data.load("mnist", n_train=20, n_test=10, data_dir=folder)
    assert ds.X_train.shape == (20, 784)


def test_nan_in_the_data(capsys, tmp_path, monkeypatch):
    real = data._bundled

    def with_nan(kind):
        x, y, scale = real(kind)
        x = np.array(x, dtype=np.float64)
        x[:, 0, 3, 3] = np.nan  # one pixel of every image: whatever subset is drawn
        return x, y, scale

    monkeypatch.setattr(data, "_bundled", with_nan)
    monkeypatch.setattr(experiments, "_DATA_CACHE", {})
    _check(*_sweep(capsys, tmp_path, _write_config(tmp_path)),
           "`data.name` ('digits')", "contains NaN", "check its files")


FLAG_CASES = [
    ("unknown-executor", ["--executor", "spark"],
     ["`--executor` must be one of", "'dask-local'", "got 'spark'"]),
    ("dask-without-scheduler", ["--executor", "dask"],
     ["`--scheduler` is required with --executor dask", "tcp://"]),
    ("malformed-scheduler", ["--executor", "dask", "--scheduler", "10.0.0.5"],
     ["`scheduler` must look like tcp://HOST:PORT", "got '10.0.0.5'"]),
    ("scheduler-without-dask", ["--scheduler", "tcp://127.0.0.1:8786"],
     ["`--scheduler` is only used with --executor dask"]),
    ("collect-without-dask", ["--executor", "local", "--collect"],
     ["`--collect` is only used with --executor dask or dask-local", "drop --collect"]),
    ("zero-workers", ["--workers", "0"], ["`--workers` must be >= 1, got 0"]),
    ("inprocess-with-workers", ["--executor", "inprocess", "--workers", "2"],
     ["`--workers` must be 1 with --executor inprocess"]),
    ("bad-device", ["--device", "tpu"], ["`device` must be 'cpu' or 'cuda', got 'tpu'"]),
]


@pytest.mark.parametrize("flags,needles", [c[1:] for c in FLAG_CASES], ids=[c[0] for c in FLAG_CASES])
def test_bad_flags(capsys, tmp_path, flags, needles):
    _check(*_sweep(capsys, tmp_path, _write_config(tmp_path), *flags), *needles)


def test_dask_missing_names_the_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    _check(*_sweep(capsys, tmp_path, _write_config(tmp_path), "--executor", "dask-local"),
           "dask.distributed", "pip install weakcorr[dask]")


def test_exit_code_of_the_real_process(tmp_path):
    """`python -m weakcorr` (the same parser and error path as the console script)."""
    config = _write_config(tmp_path, "model", "widths", [0])
    proc = subprocess.run([sys.executable, "-m", "weakcorr", "sweep", config, "--out",
                           str(tmp_path / "out")], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip() == ("weakcorr sweep: error: `model.widths[0]` must be an "
                                   "integer >= 1, got 0 (int)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
