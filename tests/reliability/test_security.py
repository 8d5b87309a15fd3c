"""Local attackers (issue 18, items 0 and 6): planted symlinks, an unauthenticated Dask
cluster, and the small ones (``--out ''``, unbounded ``--workers``, SIGTERM, a full disk).

Before the change: temp files were ``.<name>.<pid>.tmp`` opened with ``open(tmp, "w")``, so a
symlink planted under that name overwrote its target (here: victim files outside --out) and
left sweep.json a link to it; a ``nobody`` process could connect to dask-local's scheduler and
run code in its workers; ``--out ''`` wrote into the current directory; ``--workers 64`` was
accepted on 2 cores; SIGTERM killed the sweep with no message and left its claims; a full
disk's error named no file.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import socket
import stat
import time

import pytest

from weakcorr import _executors, cli, config, experiments, results, sweep
from weakcorr._files import atomic_open, atomic_write_text
from weakcorr.results import RunStore, run_id

from ..sweep._fake import fake_record, fake_runner

GRID = {
    "name": "fake",
    "model": {"widths": [8, 16], "depth": 2},
    "data": {"name": "teacher", "n_train": 64, "n_test": 32},
    "training": {"steps": 20, "batch_size": 16, "lr0": 0.1, "alphas": [0]},
    "seeds": 2,
    "logging": {"every": 5},
}
NOBODY = 65534


def _snapshot(root: pathlib.Path, skip: pathlib.Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and skip not in p.parents}


def _plant(out: pathlib.Path, victims: pathlib.Path, names: list[str]) -> None:
    """A symlink to a victim file outside ``out`` under the temp name the old code used for
    each of ``names`` (``.<name>.<pid>.tmp``), and for those that may be replaced, also under
    the name itself."""
    pid = os.getpid()
    for name in names:
        link = out / name
        link.parent.mkdir(parents=True, exist_ok=True)
        for i, planted in enumerate([link.with_name(f".{link.name}.{pid}.tmp"), link]):
            if i and name in ("sweep.json", "protocol.json"):
                continue  # a link there is an unreadable directory, refused before writing
            target = victims / f"{name.replace('/', '_')}.{i}"
            target.write_text(f"victim {name}")
            os.symlink(target, planted)


def test_planted_symlinks_never_change_a_file_outside_out(tmp_path, monkeypatch):
    from weakcorr import plots, report

    monkeypatch.setattr(plots, "save_figure", lambda fig, save_to, **kw: [])  # text only
    cfg = config.load(GRID)
    out, victims = tmp_path / "out", tmp_path / "victims"
    victims.mkdir()
    rids = [run_id(c) for c in config.expand(cfg)]
    _plant(out, victims, ["sweep.json", "protocol.json", "report.md", "summary.json",
                          *(f"runs/{r}.json" for r in rids)])
    before = _snapshot(tmp_path, out)
    sweep.run_sweep(cfg, str(out), runner=fake_runner, check_data=False)
    report.write_report(out, n_boot=10)
    assert _snapshot(tmp_path, out) == before  # nothing outside --out changed
    for name in ["sweep.json", "protocol.json", "report.md", "summary.json",
                 *(f"runs/{r}.json" for r in rids)]:
        st = os.lstat(out / name)
        assert stat.S_ISREG(st.st_mode), name  # a file of ours, not a link to a victim
        assert stat.S_IMODE(st.st_mode) == 0o666 & ~_umask(), name  # as open() would make it
    assert json.loads((out / "sweep.json").read_text())["kind"] == "a2"


def test_figures_never_follow_planted_symlinks(tmp_path):
    from matplotlib.figure import Figure

    from weakcorr import plots

    out, victims = tmp_path / "out", tmp_path / "victims"
    victims.mkdir()
    _plant(out, victims, ["figures/f.png", "figures/f.pdf"])
    before = _snapshot(tmp_path, out)
    fig = Figure()
    fig.add_subplot().plot([1, 2], [1, 4])
    png, pdf = plots.save_figure(fig, out / "figures" / "f")
    assert _snapshot(tmp_path, out) == before
    assert png.read_bytes().startswith(b"\x89PNG") and not png.is_symlink()


def test_a_symlink_at_a_targets_name_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    os.symlink(victim, tmp_path / "report.md")
    atomic_write_text(tmp_path / "report.md", "report")
    assert victim.read_text() == "keep" and not (tmp_path / "report.md").is_symlink()


def test_a_runs_folder_linked_by_another_user_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / "runs")
    if os.geteuid() != 0:
        pytest.skip("needs root to make a symlink owned by another user")
    os.lchown(out / "runs", NOBODY, NOBODY)
    with pytest.raises(ValueError, match=r"runs/ is a symlink owned by another user \(uid "
                       r"65534\).*pass another directory as --out"):
        sweep.run_sweep(config.load(GRID), str(out), runner=fake_runner, check_data=False)
    assert not list(elsewhere.iterdir()) and not (out / "sweep.json").exists()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_a_full_disk_names_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        results.atomic_write_json(tmp_path / "sweep.json", {"a": 1})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "sweep.json")
    assert cli.os_error_message(info.value, str(tmp_path)).startswith(
        f"`--out` {str(tmp_path)!r}: {str(tmp_path / 'sweep.json')!r}: No space left on device")
    assert not list(tmp_path.iterdir())


def test_atomic_open_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match="`mode` must be 'w' or 'wb', got 'a'"):
        with atomic_open(tmp_path / "x", "a"):
            pass


# -- the small ones, through the CLI


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(GRID))  # JSON is YAML
    return str(path)


def test_empty_out_is_refused_and_writes_nothing(tiny_yaml, tmp_path, monkeypatch, capsys):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli.main(["sweep", tiny_yaml, "--out", "", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`--out` is empty ('')" in err and "current directory" in err
    assert not list(work.iterdir())


@pytest.mark.parametrize("command", ["sweep", "demo"])
def test_workers_above_the_cpu_count_need_force(command, tiny_yaml, tmp_path, monkeypatch,
                                                capsys):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    args = [command, *([tiny_yaml] if command == "sweep" else []), "--out", str(tmp_path / "o"),
            "--quiet", "--executor", "local"]
    assert cli.main([*args, "--workers", "64"]) == 2
    err = capsys.readouterr().err
    assert ("`--workers` 64 is more than this machine's 2 CPU(s); each worker trains on its own "
            "CPU, so pass --workers 2 or fewer (or add --force-workers)") in err
    assert not (tmp_path / "o").exists()
    seen = {}

    def stop(kind, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(_executors, "make_executor", stop)
    assert cli.main([*args, "--workers", "64", "--force-workers"]) == 2
    assert "stop here" in capsys.readouterr().err and seen["workers"] == 64


def test_sigterm_is_handled_like_ctrl_c(tiny_yaml, tmp_path, monkeypatch, capsys):
    """SIGTERM mid-run: one message, exit 143, finished runs kept, no claim left."""
    class Killed(Exception):
        pass

    def fallback(signum, frame):  # what the test sees if SIGTERM is not handled
        raise Killed

    old = signal.signal(signal.SIGTERM, fallback)
    calls = []

    def runner(configs, *, device):
        calls.append(len(configs))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return [fake_record(c) for c in configs]

    monkeypatch.setattr(experiments, "run_group", runner)
    monkeypatch.setattr(experiments, "check_data", lambda cfg: None)
    out = tmp_path / "o"
    try:
        code = cli.main(["sweep", tiny_yaml, "--out", str(out), "--quiet"])
    finally:
        assert signal.getsignal(signal.SIGTERM) is fallback  # restored after the command
        signal.signal(signal.SIGTERM, old)
    assert code == 143
    err = capsys.readouterr().err
    assert err == ("weakcorr sweep: interrupted (SIGTERM); finished runs are kept and the claims "
                   "of runs in flight released: rerun the same command to resume\n")
    store = RunStore(out)
    assert len(list(store.records())) == 1 and not list((out / "runs").glob("*.claim"))


# -- Dask


def test_dask_local_refuses_to_start_without_tls(monkeypatch):
    pytest.importorskip("distributed")
    from distributed import LocalCluster
    from distributed.security import Security

    def no_crypto():
        raise ImportError("No module named 'cryptography'")

    started = []
    monkeypatch.setattr(Security, "temporary", staticmethod(no_crypto))
    monkeypatch.setattr(LocalCluster, "__init__", lambda *a, **k: started.append(1))
    ex = _executors.DaskLocalExecutor(1)
    with pytest.raises(ValueError, match="TLS with temporary credentials, which needs the "
                       "`cryptography` package.*refuses to start an unauthenticated cluster"):
        ex.client  # noqa: B018 - starts the cluster
    assert not started


def test_dashboard_only_with_dask_local():
    with pytest.raises(ValueError, match="`--dashboard` is only used with --executor dask-local"):
        _executors.make_executor("local", workers=1, dashboard=True)


@pytest.mark.slow
def test_dask_local_runs_code_only_for_its_own_client(capfd):
    """A client without the cluster's temporary credentials cannot connect (plain TCP, TLS
    without a certificate, or another CA's), and no HTTP route (the dashboard's
    /json/identity.json published the address) is served; a garbage packet to the scheduler
    prints nothing on the terminal."""
    import urllib.error
    import urllib.request

    distributed = pytest.importorskip("distributed")
    pytest.importorskip("cryptography")
    from distributed.security import Security

    ex = _executors.DaskLocalExecutor(1)
    try:
        addr = ex.cluster.scheduler_address
        assert addr.startswith("tls://127.0.0.1:")
        assert ex.client.submit(sum, [40, 2]).result(timeout=60) == 42  # its own client works
        attempts = {"tls, no certificate": (addr, None),
                    "plain tcp": (addr.replace("tls://", "tcp://"), None),
                    "another CA": (addr, Security.temporary())}
        for what, (address, security) in attempts.items():
            with pytest.raises(Exception) as info:  # noqa: PT011 - any refusal will do
                distributed.Client(address, timeout="5s", security=security,
                                   set_as_default=False)
            assert not isinstance(info.value, AssertionError) or what == "another CA", what
        port = ex.cluster.scheduler.http_server.port
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/json/identity.json", timeout=5)
        host, sport = addr[len("tls://"):].rsplit(":", 1)
        with socket.create_connection((host, int(sport))) as s:  # garbage to the scheduler
            s.sendall(b"\x00GARBAGE" * 200)
        time.sleep(1.0)
    finally:
        ex.shutdown()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "tornado" not in err, err[-2000:]


@pytest.mark.slow
def test_sigterm_releases_the_claims_of_pool_workers(tmp_path):
    """SIGTERM while a pool worker runs a run: the worker is stopped and this sweep's claim of
    its run removed (before, it stayed until a later sweep judged it stale)."""
    import threading

    from ._runners import StartLogRunner

    out = tmp_path / "o"
    runs = out / "runs"

    def kill_when_claimed():
        for _ in range(600):
            if runs.is_dir() and list(runs.glob("*.claim")):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=kill_when_claimed, daemon=True).start()
    pool = sweep.SupervisedPoolExecutor(1, threads_per_worker=1)
    with pytest.raises(cli.Terminated), cli.sigterm_as_interrupt():
        sweep.run_sweep(config.load(GRID), str(out), executor=pool, check_data=False,
                        runner=StartLogRunner(str(tmp_path / "log"), delay_s=60))
    assert not list(runs.glob("*.claim")) and not list(RunStore(out).records())


@pytest.mark.parametrize("argv", [
    ["correlations", "--width", "4", "--depth", "1", "--dataset", "teacher", "--n-inputs", "2",
     "--orders", "2", "--seeds", "1", "--quiet"],
    ["a1", "demo", "--report-only"],
], ids=["correlations", "a1"])
def test_empty_out_is_refused_by_every_command(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main([*argv, "--out", ""]) == 2
    assert "is empty ('')" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_a1_workers_above_the_cpu_count_need_force(tmp_path, monkeypatch, capsys):
    """`a1 --workers` has sweep's cap (64 workers on 2 cores only thrash), before any work."""
    from weakcorr import _a1_report

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    args = ["a1", "a1-demo", "--out", str(tmp_path / "o"), "--quiet"]
    assert cli.main([*args, "--workers", "64"]) == 2
    assert ("`--workers` 64 is more than this machine's 2 CPU(s); each worker trains on its own "
            "CPU, so pass --workers 2 or fewer (or add --force-workers)") in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    def stop(*a, **kw):
        raise ValueError("stop here")

    monkeypatch.setattr(_a1_report, "run_a1", stop)
    assert cli.main([*args, "--workers", "64", "--force-workers"]) == 2
    assert "stop here" in capsys.readouterr().err
