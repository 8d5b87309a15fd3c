"""`weakcorr sweep` / `demo` at the CLI level: --out problems and OS errors as one line, demo's
default worker count, and a summary line that adds up (fake runner, seconds)."""

from __future__ import annotations

import json
import os

import pytest

from weakcorr import _executors, cli, config, experiments, results, sweep
from weakcorr._claims import ClaimingRunStore

from ..sweep._fake import fake_runner

TINY = """\
name: tiny
model: {widths: [8, 16], depth: 1}
data: {name: digits, n_train: 64, n_test: 32}
training: {steps: 2, batch_size: 16, lr0: 0.1, alphas: [0]}
seeds: 1
logging: {every: 1}
"""


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A 2-run config; runs go through the fake runner (in-process)."""
    monkeypatch.setattr(experiments, "run_group", fake_runner)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return str(path)


def _one_line_error(capsys, command: str) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"weakcorr {command}: error: "), lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("command", ["sweep", "demo"])
def test_out_that_is_a_file_is_one_line_naming_out(command, tiny, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    argv = ["sweep", tiny] if command == "sweep" else ["demo"]
    assert cli.main([*argv, "--out", str(afile), "--quiet"]) == 2
    line = _one_line_error(capsys, command)
    assert repr(str(afile)) in line and "is a file" in line and "--out" in line
    assert afile.read_text() == "mine"


def test_out_under_a_file_is_one_line_not_a_traceback(tiny, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "sub"
    assert cli.main(["sweep", tiny, "--out", str(out), "--quiet"]) == 2  # checked up front
    line = _one_line_error(capsys, "sweep")
    assert line == (f"weakcorr sweep: error: `--out` {str(out)!r}: "
                    f"{str(tmp_path / 'afile')!r} is a file, so no directory can be made under "
                    "it; pass a directory path as --out")


def test_permission_error_under_out_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    def refuse(self, update):
        raise PermissionError(13, "Permission denied", str(self.root / results.MANIFEST))

    monkeypatch.setattr(results.RunStore, "update_manifest", refuse)  # sweep.json, merged
    out = tmp_path / "out"
    assert cli.main(["sweep", tiny, "--out", str(out), "--quiet"]) == 2
    line = _one_line_error(capsys, "sweep")
    assert line == (f"weakcorr sweep: error: `--out` {str(out)!r}: "
                    f"{str(out / 'sweep.json')!r}: Permission denied [Errno 13]; pass a "
                    "directory that can be created or written to as --out")


@pytest.mark.parametrize("err,out,expected", [
    (FileExistsError(17, "File exists", "d/x"), "d",
     ("`--out` 'd': 'd/x': File exists [Errno 17]; pass a directory that can be created or "
      "written to as --out")),
    (FileExistsError(17, "File exists", "d"), "d",
     ("`--out` 'd': File exists [Errno 17]; pass a directory that can be created or written "
      "to as --out")),
    (PermissionError(13, "Permission denied", "/a"), "/a/b/c",  # a parent of --out
     ("`--out` '/a/b/c': '/a': Permission denied [Errno 13]; pass a directory that can be "
      "created or written to as --out")),
    (IsADirectoryError(21, "Is a directory", "cfg.yaml"), "d",
     "'cfg.yaml': Is a directory [Errno 21]; check the path and its permissions"),
    (OSError(28, "No space left on device"), None, "No space left on device [Errno 28]"),
    (FileNotFoundError("no config file 'x.yaml'"), "d", "no config file 'x.yaml'"),
], ids=["in-out", "out-itself", "parent-of-out", "elsewhere", "no-path", "own-message"])
def test_os_error_message(err, out, expected):
    assert cli.os_error_message(err, out) == expected


# -- demo's default worker count


@pytest.mark.parametrize("flags,workers", [
    ([], 2), (["--executor", "local"], 2), (["--executor", "dask-local"], 2),
    (["--executor", "inprocess"], 1), (["--executor", "dask", "--scheduler", "tcp://h:1"], 1),
    (["--executor", "local", "--workers", "3"], 3),
], ids=["auto", "local", "dask-local", "inprocess", "dask", "explicit"])
def test_demo_default_workers_fit_the_executor(flags, workers, monkeypatch, capsys):
    seen = {}

    def stop(kind, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(_executors, "make_executor", stop)
    assert cli.main(["demo", "--out", "unused", "--quiet", *flags]) == 2
    assert "stop here" in capsys.readouterr().err
    assert seen["workers"] == workers


def test_demo_help_states_the_default_workers(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default 2 (1 on a one-core machine) with --executor auto, local or dask-local; 1 " \
           "with inprocess or dask" in text


# -- the summary line adds up


def _failing_runner(configs, *, device=None):
    raise RuntimeError("boom")


def test_summary_names_failed_runs_skipped(tiny, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "out")
    monkeypatch.setattr(experiments, "run_group", _failing_runner)
    assert cli.main(["sweep", tiny, "--out", out, "--quiet"]) == 0
    assert "2 runs (0 already done, 2 run now: 0 ok, 0 diverged, 2 failed)" in (
        capsys.readouterr().out)
    monkeypatch.setattr(experiments, "run_group", fake_runner)
    assert cli.main(["sweep", tiny, "--out", out, "--quiet"]) == 0
    assert ("2 runs (0 already done, 2 failed before and skipped (--retry-failed redoes them), "
            "0 run now: 0 ok, 0 diverged, 0 failed)") in capsys.readouterr().out
    assert cli.main(["sweep", tiny, "--out", out, "--quiet", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert (payload["skipped"], payload["skipped_failed"], payload["ran"]) == (2, 2, 0)
    assert cli.main(["sweep", tiny, "--out", out, "--quiet", "--retry-failed"]) == 0
    assert "2 runs (0 already done, 2 run now: 2 ok, 0 diverged, 0 failed)" in (
        capsys.readouterr().out)
    assert cli.main(["sweep", tiny, "--out", out, "--quiet"]) == 0
    assert "2 runs (2 already done, 0 run now: 0 ok" in capsys.readouterr().out


def test_summary_names_runs_claimed_by_another_sweep(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    rid = sweep.plan(config.load(tiny, []), results.RunStore(out)).run_ids[0]
    other = ClaimingRunStore(out)  # another live sweep holds this run
    assert other.claim(rid)
    try:
        assert cli.main(["sweep", tiny, "--out", str(out), "--quiet"]) == 0
    finally:
        other.release(rid)
    assert ("2 runs (0 already done, 1 claimed by another sweep, 1 run now: 1 ok, 0 diverged, "
            "0 failed)") in capsys.readouterr().out
