"""The correlation-vs-width experiment (paper Sec. 3.2, App. A.1, Figs. 1–3), as the CLI runs it.

For every (width, seed): build an MLP (or a member of your family, ``model="MODULE:FUNCTION"``,
:mod:`weakcorr._factory`) at initialisation, compute the exact diagonal
C^{0,d}(x; x..x)_{i; i..i} (Eq. 11) for every input and output with
:func:`weakcorr.correlations.diagonal`, and write one JSON record atomically
(``corr_w{width}_s{seed}.json``: temp file + ``os.replace``).  Existing records with the
same configuration are reused (resume).  A summary fits ``log mean|C^{0,d}|`` against
``log width`` per order (least squares; for confidence intervals over seeds use
:mod:`weakcorr.asymptotics`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__, _factory
from . import correlations as C
from . import data as _data
from . import models as _models
from ._files import atomic_open, check_writable_dir, ensure_dir
from .fits import loglog_slope
from .functional import functional

__all__ = [
    "SCHEMA_VERSION",
    "CorrelationSweep",
    "format_table",
    "run_id",
    "run_sweep",
    "summarize",
    "write_json_atomic",
]

SCHEMA_VERSION = 1
#: The largest seed (torch generators take 64-bit seeds; numpy's take any).
MAX_SEED = 2**63 - 1
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_PARAMETERIZATIONS = ("standard", "ntk", "mup")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CorrelationSweep:
    """One correlation-vs-width sweep: widths × seeds, fixed architecture, data and orders."""

    widths: tuple[int, ...]
    depth: int = 2
    activation: str = "gelu"
    parameterization: str = "ntk"
    dataset: str = "mnist5k"
    n_inputs: int = 160
    orders: tuple[int, ...] = (2, 3)
    lr: float = 1.0
    seeds: int = 3
    seed_offset: int = 0
    data_seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    method: str = "auto"
    max_memory_gb: float = 4.0
    data_dir: str | None = field(default=None, compare=False)
    # A model family of your own instead of the MLP (depth, activation, parameterization then
    # do not apply): "MODULE:FUNCTION" or "path/to/file.py:FUNCTION", with keyword arguments as
    # sorted (key, value) pairs; flatten=False keeps images as [N, C, H, W].
    model: str | None = None
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    flatten: bool = True

    def validate(self) -> None:
        """Raise ValueError naming the first bad field by its `weakcorr correlations` flag."""
        if not self.widths or any(int(w) < 1 for w in self.widths):
            raise ValueError(
                f"`--width` must be one or more integers >= 1, got {_args(self.widths)}."
            )
        if len(set(self.widths)) != len(self.widths):
            raise ValueError(f"`--width` must not repeat a width, got {_args(self.widths)}.")
        for name in ("depth", "n_inputs", "seeds"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"`{_flag(name)}` must be >= 1, got {getattr(self, name)!r}.")
        for name in ("seed_offset", "data_seed"):
            if not 0 <= int(getattr(self, name)) <= MAX_SEED:
                raise ValueError(f"`{_flag(name)}` must be an integer >= 0 (and < 2**63), "
                                 f"got {getattr(self, name)!r}.")
        if self.seed_offset + self.seeds - 1 > MAX_SEED:
            raise ValueError(f"`--seed-offset` {self.seed_offset} with `--seeds` {self.seeds} "
                             "gives seeds of 2**63 or more; pass a smaller --seed-offset.")
        if not self.orders or any(not 1 <= int(k) <= 6 for k in self.orders):
            raise ValueError(
                f"`--orders` must be one or more integers in 1..6, got {_args(self.orders)}; "
                "e.g. 2 3."
            )
        if len(set(self.orders)) != len(self.orders):
            raise ValueError(f"`--orders` must not repeat an order, got {_args(self.orders)}.")
        if self.model is not None:
            _factory.parse_spec(self.model, name="--model")
            _factory.check_kwargs(dict(self.model_kwargs), "--model-kwargs")
        elif not self.flatten:
            raise ValueError("`--no-flatten` needs `--model`: the built-in MLP takes flat "
                             "inputs; add --model MODULE:FUNCTION (e.g. a CNN) or drop "
                             "--no-flatten")
        mlp = (() if self.model is not None else
               (("activation", [a.value for a in _models.Activation]),
                ("parameterization", list(_PARAMETERIZATIONS))))
        for name, allowed in (*mlp,
                              ("dataset", [d.value for d in _data.DatasetName]),
                              ("dtype", list(_DTYPES)),
                              ("method", [m.value for m in C.DiagonalMethod])):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{_flag(name)}` must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"`--lr` must be a finite number > 0, got {self.lr!r}.")
        if not (math.isfinite(self.max_memory_gb) and self.max_memory_gb > 0):
            raise ValueError(f"`--max-memory-gb` must be a finite number > 0, got "
                             f"{self.max_memory_gb!r}; e.g. 4.")
        _check_device(self.device)

    def runs(self) -> list[tuple[int, int]]:
        """The (width, seed) pairs, widths outer."""
        seeds = range(self.seed_offset, self.seed_offset + self.seeds)
        return [(int(w), s) for w in self.widths for s in seeds]

    def to_dict(self) -> dict[str, Any]:
        """The settings; with ``model``, the family (spec, kwargs, source sha256) replaces the
        MLP's fields, without it the family fields are left out (older records stay valid)."""
        out = asdict(self)
        out["widths"], out["orders"] = list(self.widths), list(self.orders)
        for k in ("model", "model_kwargs", "flatten"):
            del out[k]
        if self.model is not None:
            for k in ("depth", "activation", "parameterization"):
                del out[k]
            out.update(_factory.identity(self.model, dict(self.model_kwargs), name="--model"))
            out["flatten"] = self.flatten
        return out


def _flag(name: str) -> str:
    """The `weakcorr correlations` flag of a field."""
    return {"widths": "--width", "factory": "--model", "kwargs": "--model-kwargs",
            "source_sha256": "--model (its source file's sha256)",
            "flatten": "--no-flatten"}.get(name, "--" + name.replace("_", "-"))


def _args(values: tuple[Any, ...]) -> str:
    """Values as they were typed after a flag: ``8 16``."""
    return repr(" ".join(map(str, values)))


def _check_device(device: str) -> None:
    bad = (f"`--device` must be cpu, cuda or cuda:K (a CUDA device index), got {device!r}; "
           "e.g. --device cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(bad) from None
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise ValueError(bad)
    if not torch.cuda.is_available():
        raise ValueError(f"`--device` is {device!r} but CUDA is not available here; "
                         "use --device cpu.")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"`--device` is {device!r} but this machine has {count} CUDA "
                         f"device(s); use cuda:0..cuda:{count - 1}.")


def run_id(width: int, seed: int) -> str:
    """The file stem of one run's record."""
    return f"corr_w{width}_s{seed}"


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON to ``path`` (its folder created) atomically: :func:`_files.atomic_open`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as fh:  # random temp name (O_EXCL | O_NOFOLLOW), fsync, rename
        json.dump(obj, fh, indent=1)


def _config_key(config: CorrelationSweep, width: int) -> dict[str, Any]:
    """What a record must share with the current sweep to be reused."""
    keep = config.to_dict()
    for name in ("widths", "seeds", "seed_offset", "device", "max_memory_gb", "data_dir"):
        keep.pop(name)
    keep["width"] = width
    return keep


def _protocol(record_config: dict[str, Any]) -> dict[str, Any]:
    """A record's settings that every record of one directory shares (all but the width)."""
    return {k: v for k, v in record_config.items() if k != "width"}


def check_out_dir(config: CorrelationSweep, out_dir: str | os.PathLike[str]) -> None:
    """Check before any work that ``out_dir`` can take the records of ``config``.

    ``out_dir`` must be a directory or creatable as one, and the records already in it must
    have the same settings: a record is named by width and seed only, so records of other
    settings would be overwritten or summarised together with these. Only the widths, the
    seeds (--seeds, --seed-offset), --device, --max-memory-gb and --data-dir may differ.

    Raises:
        ValueError: naming ``--out``, what is wrong, and the fix.
    """
    root = Path(out_dir)
    shown = repr(str(out_dir))
    check_writable_dir(out_dir, "--out")  # the string: '' (the current directory) is refused
    if not root.exists():
        return
    if (root / "sweep.json").exists():
        raise ValueError(f"`--out` {shown} is a `weakcorr sweep`/`a1` directory (it holds "
                         "sweep.json); pass a new directory as --out.")
    now = _protocol(_config_key(config, 0))
    changed: dict[str, str] = {}
    for path in sorted(root.glob("corr_w*_s*.json")):
        try:
            record = json.loads(path.read_text())
        except Exception:  # noqa: BLE001 - RecursionError, MemoryError too: recomputed
            continue  # an unreadable record is recomputed and overwritten
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            continue
        before = _protocol(record["config"])
        for key in sorted(set(before) | set(now)):
            if before.get(key) != now.get(key) and key not in changed:
                changed[key] = (f"{_flag(key)} {_shown(before.get(key))} in {path.name}, "
                                f"{_shown(now.get(key))} now")
    if changed:
        raise ValueError(f"`--out` {shown} holds records of other settings "
                         f"({'; '.join(changed.values())}); they would be overwritten or "
                         "summarised with these. Pass a new directory as --out (into this one, "
                         "only --width, --seeds, --seed-offset, --device, --max-memory-gb and "
                         "--data-dir may change).")


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return _args(tuple(value))
    return "(unset)" if value is None else repr(value)


def _order_metrics(values: torch.Tensor) -> dict[str, Any]:
    v = values.double()
    return {
        "mean": float(v.mean()),
        "mean_abs": float(v.abs().mean()),
        "rms": float(v.pow(2).mean().sqrt()),
        "median_abs": float(v.abs().median()),
        "max_abs": float(v.abs().max()),
        "values": v.cpu().tolist(),  # [n_inputs][d_y]
    }


def _load_inputs(config: CorrelationSweep) -> tuple[torch.Tensor, int]:
    """The first ``n_inputs`` training inputs, flattened, and the output dimension d_y."""
    try:
        ds = _data.load(
            config.dataset, n_train=config.n_inputs, n_test=1, seed=config.data_seed,
            data_dir=config.data_dir, flatten=config.flatten,
        )
    except (ValueError, FileNotFoundError) as err:
        msg = str(err)
        size = re.search(r"has (\d+) samples available, but `(n_train(?: \+ n_test)?)`", msg)
        if size is not None:  # too many inputs: one sample more is drawn as the test split
            available, pooled = int(size[1]), "n_test" in size[2]
            most = available - 1 if pooled else available
            has = (f"it has {available} samples and 1 is drawn as a test sample" if pooled
                   else f"its training files have {available} samples")
            raise ValueError(
                f"`--n-inputs` {config.n_inputs} is too many for --dataset {config.dataset!r}: "
                f"{has}; pass --n-inputs {most} or fewer."
            ) from None
        # data.load names its parameters; name the flags instead.
        msg = msg.replace("`data_dir`", "`--data-dir`").replace("data_dir=", "--data-dir ")
        raise type(err)(msg) from None
    X = torch.as_tensor(ds.X_train)
    if config.flatten:
        X = X.reshape(X.shape[0], -1)
    X = X.to(dtype=_DTYPES[config.dtype], device=config.device)
    Y = torch.as_tensor(ds.Y_train)
    d_out = int(Y.shape[-1]) if Y.ndim == 2 else int(torch.as_tensor(ds.labels_train).max()) + 1
    return X, d_out


def _compute(
    config: CorrelationSweep, width: int, seed: int, X: torch.Tensor, d_out: int,
    progress: Progress, family: _factory.Family | None = None,
) -> dict[str, Any]:
    if family is not None:
        model = _factory.make(family, width, seed, name=f"`--model` {config.model!r}").to(
            dtype=_DTYPES[config.dtype], device=config.device)
    else:
        model = _models.mlp(
            X.shape[1], [width] * config.depth, d_out, activation=config.activation,
            parameterization=config.parameterization, seed=seed, dtype=_DTYPES[config.dtype],
        ).to(config.device)
    fm = functional(model)  # correlations.diagonal runs the derivative self-check on it
    start = time.perf_counter()
    diag = C.diagonal(
        fm, X, orders=config.orders, lr=config.lr, method=config.method,
        max_memory_gb=config.max_memory_gb, progress=progress,
    )
    wall = time.perf_counter() - start
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "correlations",
        "run_id": run_id(width, seed),
        "status": "ok",
        "config": _config_key(config, width),
        "width": width,
        "seed": seed,
        "n_params": fm.n_params,
        "device": str(X.device),
        "dtype": config.dtype,
        "versions": {"weakcorr": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "wall_time_s": wall,
        "metrics": {f"C{k}": _order_metrics(v) for k, v in sorted(diag.items())},
    }


def run_sweep(
    config: CorrelationSweep,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = True,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Run every (width, seed) of ``config``; write one JSON per run into ``out_dir``.

    Args:
        config: the sweep.
        out_dir: folder for the records (created); None keeps them in memory only. Its records
            must have the same settings (:func:`check_out_dir`).
        resume: reuse an existing record whose configuration matches.
        progress: ``progress(n_done, n_total)`` over all (input, output) pairs of the sweep.

    Returns:
        The records, in the order of ``config.runs()``.

    Raises:
        ValueError: a bad field, an ``out_dir`` that is a file or holds records of other
            settings, or a dataset that cannot give ``n_inputs`` inputs;
        FileNotFoundError: a dataset's files are missing.
    """
    config.validate()
    if out_dir is not None:
        check_out_dir(config, out_dir)
    runs = config.runs()
    family = None
    if config.model is not None:  # imported and checked (signature, return, data) first
        family = _factory.load(config.model, dict(config.model_kwargs))
    X, d_out = _load_inputs(config)
    if family is not None:
        probe = _factory.check_member(family, min(w for w, _ in runs), runs[0][1], X,
                                      name=f"`--model` {config.model!r}")
        with torch.no_grad():
            fm0 = functional(probe.to(dtype=_DTYPES[config.dtype], device=config.device))
            out = fm0(fm0.params, X[:1])
        d_out = int(out.shape[-1]) if out.ndim >= 2 else 1
    records: list[dict[str, Any]] = []
    per_run = X.shape[0] * d_out
    total = per_run * len(runs)
    report = progress or (lambda n_done, n_total: None)
    for k, (width, seed) in enumerate(runs):
        path = Path(out_dir) / f"{run_id(width, seed)}.json" if out_dir is not None else None
        record = _existing(path, config, width) if (path is not None and resume) else None
        if record is None:
            record = _compute(
                config, width, seed, X, d_out,
                lambda n_done, _n, base=k * per_run: report(base + n_done, total), family,
            )
            if path is not None:
                write_json_atomic(path, record)
        report((k + 1) * per_run, total)
        records.append(record)
    return records


def _existing(path: Path | None, config: CorrelationSweep, width: int) -> dict[str, Any] | None:
    """The finished record at ``path``, or None to recompute it. A file that is not a record
    (unreadable, a 100,000-deep JSON, not a mapping) is moved to ``corrupt/`` beside it, never
    deleted or overwritten, as sweeps do with their run files."""
    if path is None or not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except Exception:  # noqa: BLE001 - any unreadable record (RecursionError too) is redone
        record = None
    if not isinstance(record, dict):
        _set_aside(path)
        return None
    if record.get("status") != "ok" or record.get("config") != _config_key(config, width):
        return None
    return record


def _set_aside(path: Path) -> Path:
    import datetime
    import uuid

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = ensure_dir(path.parent / "corrupt") / f"{path.name}.{stamp}-{uuid.uuid4().hex[:6]}"
    os.rename(path, dest)
    return dest


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per order: mean over seeds of mean|C| at each width, and the log-log slope in width."""
    out: dict[str, Any] = {}
    orders = sorted({name for r in records for name in r["metrics"]}, key=lambda s: int(s[1:]))
    for name in orders:
        by_width: dict[int, list[float]] = {}
        for r in records:
            by_width.setdefault(r["width"], []).append(r["metrics"][name]["mean_abs"])
        widths = sorted(by_width)
        means = [sum(by_width[w]) / len(by_width[w]) for w in widths]
        slope = None
        if len(widths) >= 2 and all(m > 0 for m in means):
            slope = loglog_slope(widths, means)
        out[name] = {"widths": widths, "mean_abs": means, "slope_vs_width": slope}
    return out


def format_table(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """A plain-text table: one row per run, then the fitted slopes."""
    orders = list(summary)
    head = f"{'width':>7} {'seed':>5} {'N':>11} " + " ".join(
        f"{'mean|' + o + '|':>14}" for o in orders
    ) + f" {'time [s]':>9}"
    lines = [head, "-" * len(head)]
    for r in records:
        lines.append(
            f"{r['width']:>7} {r['seed']:>5} {r['n_params']:>11,} "
            + " ".join(f"{r['metrics'][o]['mean_abs']:>14.4e}" for o in orders)
            + f" {r['wall_time_s']:>9.2f}"
        )
    for o in orders:
        slope = summary[o]["slope_vs_width"]
        if slope is not None:
            lines.append(f"mean|{o}| ~ width^{slope:.3f} (least squares over seed means)")
    return "\n".join(lines)
