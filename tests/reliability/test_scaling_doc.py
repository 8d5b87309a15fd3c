"""docs/scaling.md: the SLURM driver runs as written against stand-ins for dask-jobqueue, the
Dask client and the sweep, and builds a consistent SLURMCluster; the multi-GPU commands use
flags that `dask` and `weakcorr` accept."""

from __future__ import annotations

import re
import shlex
import sys
import types

import distributed
import pytest

from weakcorr import cli, config, sweep

DOC = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "scaling.md"

# Parameters of dask_jobqueue.SLURMCluster (its JobQueueCluster and SLURMJob arguments, 0.8-0.9).
SLURM_PARAMS = {
    "queue", "account", "project", "cores", "memory", "processes", "walltime", "job_cpu",
    "job_mem", "job_extra_directives", "job_directives_skip", "job_script_prologue",
    "worker_extra_args", "worker_command", "local_directory", "log_directory", "interface",
    "death_timeout", "name", "n_workers", "shebang", "python", "env_extra", "scheduler_options",
    "scheduler_cls", "shared_temp_directory", "nanny", "protocol", "security", "config_name",
    "silence_logs", "host", "dashboard_address", "asynchronous", "loop", "job_name",
    "submit_command_extra", "cancel_command_extra",
}


def _block(marker: str) -> str:
    text = DOC.read_text()
    m = re.search(re.escape(f"<!-- {marker} -->") + r"\s*```\w*\n(.*?)```", text, re.S)
    assert m, f"no code block after <!-- {marker} --> in {DOC.name}"
    return m.group(1)


def _hours(text: str) -> float:
    if ":" in text:
        h, m, s = (int(x) for x in text.split(":"))
        return h + m / 60 + s / 3600
    value, unit = float(text[:-1]), text[-1]
    return value / {"h": 1, "m": 60, "s": 3600}[unit]


def _gigabytes(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(GB|GiB|MB|TB)", text)
    assert m, text
    return float(m.group(1)) * {"MB": 1e-3, "GB": 1.0, "GiB": 1.074, "TB": 1e3}[m.group(2)]


@pytest.fixture
def driver(monkeypatch):
    """Execute the documented SLURM driver with everything outside weakcorr stubbed."""
    seen: dict = {"config": [], "adapt": None, "sweep": None, "client": None}

    class SLURMCluster:
        def __init__(self, **kwargs):
            seen["cluster_kwargs"] = kwargs

        def adapt(self, **kwargs):
            seen["adapt"] = kwargs

    class Client:
        def __init__(self, cluster):
            seen["client"] = (self, cluster)

    class Summary:
        def to_dict(self):
            return {"stub": True}

    def run_sweep(cfg, out_dir, **kwargs):
        seen["sweep"] = (cfg, out_dir, kwargs)
        return Summary()

    import dask

    monkeypatch.setitem(sys.modules, "dask_jobqueue",
                        types.SimpleNamespace(SLURMCluster=SLURMCluster))
    monkeypatch.setattr(distributed, "Client", Client)
    monkeypatch.setattr(dask.config, "set", lambda d: seen["config"].append(d))
    monkeypatch.setattr(sweep, "run_sweep", run_sweep)
    namespace: dict = {}
    exec(compile(_block("slurm-driver"), "docs/scaling.md", "exec"), namespace)
    seen["namespace"] = namespace
    return seen


def test_slurm_driver_builds_one_gpu_worker_per_job(driver):
    kw = driver["cluster_kwargs"]
    assert kw == driver["namespace"]["cluster_kwargs"]
    assert set(kw) <= SLURM_PARAMS, set(kw) - SLURM_PARAMS
    assert (kw["cores"], kw["processes"]) == (1, 1)  # one worker, one run at a time
    assert "--gres=gpu:1" in kw["job_extra_directives"]
    assert kw["job_cpu"] >= 1
    assert kw["scheduler_options"]["dashboard_address"].startswith("127.0.0.1:")
    args = kw["worker_extra_args"]
    lifetime = _hours(args[args.index("--lifetime") + 1])
    stagger = _hours(args[args.index("--lifetime-stagger") + 1])
    assert lifetime + stagger < _hours(kw["walltime"])  # workers retire before SLURM kills them
    largest = max(config.load("paper-a2").model.widths)
    params = largest**2 + 796 * largest + 10
    assert _gigabytes(kw["memory"]) >= 5 * 4 * params / 1e9  # 5 float32 copies fit in host RAM


def test_slurm_driver_sets_retry_semantics_and_runs_paper_a2_on_the_cluster(driver):
    assert driver["config"] == [{"distributed.scheduler.worker-saturation": 1.0,
                                 "distributed.scheduler.allowed-failures": 1}]
    assert driver["adapt"]["maximum_jobs"] >= 1 and driver["adapt"]["minimum_jobs"] == 0
    cfg, out_dir, kwargs = driver["sweep"]
    assert cfg.name == "paper-a2" and cfg.data.data_dir == "/shared/data/mnist"
    assert len(config.expand(cfg)) == 7000
    assert kwargs["device"] == "cuda" and out_dir.startswith("/shared/")
    executor = kwargs["executor"]
    client, cluster = driver["client"]
    assert isinstance(executor, sweep.DaskExecutor) and executor.client is client
    assert not executor.collect and executor._own_client is False


def test_multi_gpu_commands_use_real_flags():
    from distributed.cli.dask_scheduler import main as scheduler_cli
    from distributed.cli.dask_worker import main as worker_cli

    flags = {"scheduler": {o for p in scheduler_cli.params for o in p.opts},
             "worker": {o for p in worker_cli.params for o in p.opts}}
    lines = [line.strip().rstrip("&").strip() for line in _block("multi-gpu").splitlines()]
    checked = set()
    for line in lines:
        words = shlex.split(line)
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # VAR=value prefixes
        if words[:1] == ["dask"]:
            used = {w for w in words[2:] if w.startswith("--")}
            assert used <= flags[words[1]], used - flags[words[1]]
            assert "127.0.0.1" in line  # loopback only
            checked.add(words[1])
        elif words[:1] == ["weakcorr"]:
            args = cli.build_parser().parse_args(words[1:])
            assert (args.executor, args.scheduler, args.device) == (
                "dask", "tcp://127.0.0.1:8786", "cuda")
            cfg = config.load(args.config, args.overrides)
            assert cfg.name == "paper-a2"
            checked.add("weakcorr")
    assert checked == {"scheduler", "worker", "weakcorr"}
    assert 'CUDA_VISIBLE_DEVICES=$gpu' in _block("multi-gpu")


def test_cost_table_matches_the_stated_rule():
    """The extrapolated per-run times follow P(n) x 21.5 us as the text says."""
    text = DOC.read_text()
    rule = re.search(r"P\(n\) × \(250 × (\d+) ns \+ 70,000 × (\d+) ps\) ≈ P\(n\) × ([\d.]+) µs", text)
    a_ns, b_ps, total_us = int(rule.group(1)), int(rule.group(2)), float(rule.group(3))
    assert abs(250 * a_ns * 1e-3 + 70_000 * b_ps * 1e-6 - total_us) < 0.2
    row = re.search(r"\| one run, one CPU thread \|(.*)\|", text).group(1)
    cells = [c.strip() for c in row.split("|")]
    seconds = [float(c.split()[0]) * (60 if c.endswith("min") else 3600) for c in cells]
    for n, s in zip((2048, 4096, 8192, 16384, 19484), seconds, strict=True):
        assert abs(s / ((n * n + 796 * n + 10) * total_us * 1e-6) - 1) < 0.05, (n, s)
