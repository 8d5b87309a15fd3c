"""Run one configuration of the paper's App. A.2 experiment: build the data and the MLP, train
the network beside its linearization (:func:`weakcorr.train.paired_sgd`), return the record.

A run config is a dict from :func:`weakcorr.config.expand`: ``model`` (``width``, ``depth``,
``activation``, ``parameterization``, ``output_scale``, ``bias``, ``sigma_w``, ``sigma_b``),
``data`` (``name``, ``n_train``, ``n_test``, ``data_dir``, ``seed``), ``training`` (``steps``,
``batch_size``, ``lr``, ``alpha``, ``lr0``, ``lr_factor``, ``loss``, ``dtype``, ``full_batch``),
``logging`` (``every``, ``eval_every``, ``probe_ntk``) and ``seed``. The seed sets both the
initialisation (``models.mlp(..., seed=seed)``) and the batch order (``paired_sgd(seed=seed)``),
shared by f and f_lin, as in the paper.

>>> from weakcorr import config, experiments
>>> cfg = config.load("demo", ["model.widths=[16]", "training.alphas=[0]", "seeds=1",
...                            "training.steps=5", "data.name=teacher"])
>>> record = experiments.run(config.expand(cfg)[0])
>>> record["status"], sorted(record["metrics"])[:2]
('ok', ['acc_f_test', 'acc_f_train'])
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from . import _memory, _vmap_train, data, models, train
from .config import SweepConfig

__all__ = ["build_model", "check_data", "check_memory", "load_data", "run", "run_group"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_DATA_CACHE: dict[tuple[Any, ...], Any] = {}


def load_data(data_cfg: Mapping[str, Any], dtype: str = "float32") -> Any:
    """The dataset of a run config's ``data`` section (cached per process).

    Raises:
        FileNotFoundError: if a dataset that lives in ``data_dir`` is not there.
    """
    options = dict(data_cfg.get("options") or {})
    flatten = bool(data_cfg.get("flatten", True))  # False: images [N, C, H, W] (CNN factories)
    key = (data_cfg["name"], data_cfg["n_train"], data_cfg["n_test"], data_cfg.get("seed", 0),
           data_cfg.get("data_dir"), dtype, tuple(sorted(options.items())), flatten)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one sweep uses one dataset; don't hoard memory
        _DATA_CACHE[key] = data.load(
            data_cfg["name"], n_train=data_cfg["n_train"], n_test=data_cfg["n_test"],
            seed=data_cfg.get("seed", 0), data_dir=data_cfg.get("data_dir"), dtype=_DTYPES[dtype],
            flatten=flatten, **options,
        )
    return _DATA_CACHE[key]


def check_data(cfg: SweepConfig) -> None:
    """Load the sweep's dataset once, so that a missing dataset fails before any run; with
    ``model.factory``, also import the factory, check its signature and run its member at the
    smallest width on the data (:func:`weakcorr._factory.check_member`).

    Raises:
        FileNotFoundError, ValueError: from :func:`weakcorr.data.load`, or a factory that
            cannot be imported, has the wrong signature, returns no nn.Module or cannot take
            the data (naming ``model.factory``).
    """
    d = cfg.data
    if d.name in ("mnist", "fashion-mnist", "cifar10") and d.data_dir is None:
        raise ValueError(f"`data.data_dir` is required for dataset {d.name!r} (weakcorr never "
                         "downloads): add --set data.data_dir=/path/to/folder")
    ds = load_data({"name": d.name, "n_train": d.n_train, "n_test": d.n_test, "seed": d.seed,
                    "data_dir": d.data_dir, "options": dict(d.options), "flatten": d.flatten},
                   cfg.training.dtype)
    if cfg.model.factory is not None:
        from . import _factory

        family = _factory.load(cfg.model.factory, dict(cfg.model.kwargs), name="model.factory",
                               kwargs_name="model.kwargs")
        _factory.check_member(family, min(cfg.model.widths), cfg.seeds[0], ds.X_train,
                              name=f"`model.factory` {cfg.model.factory!r}")


def build_model(run_cfg: Mapping[str, Any], d_in: int, d_out: int) -> nn.Module:
    """The MLP ``d_in → width → … → width → d_out`` of a run config, seeded by its seed; or,
    with ``model.factory``, ``make_model(width, seed, **model.kwargs)`` in the run's dtype.

    Raises:
        ValueError: the factory's source no longer has the hash in the run config (it was
            edited after the sweep started: the run would not be the run its id names).
    """
    m = run_cfg["model"]
    if m.get("factory") is not None:
        from . import _factory

        model = _factory.build(m, run_cfg["seed"], name="model.factory")
        return model.to(_DTYPES[run_cfg["training"]["dtype"]])
    extra = {k: m[k] for k in ("sigma_w", "sigma_b") if m.get(k) is not None}
    return models.mlp(
        d_in, [m["width"]] * m["depth"], d_out, activation=m["activation"],
        parameterization=m["parameterization"], bias=m["bias"], output_scale=m["output_scale"],
        seed=run_cfg["seed"], dtype=_DTYPES[run_cfg["training"]["dtype"]], **extra,
    )


def _train_kwargs(run_cfg: Mapping[str, Any], device: str | None) -> dict[str, Any]:
    t, lg = run_cfg["training"], run_cfg["logging"]
    return dict(lr=t["lr"], steps=t["steps"], batch_size=t["batch_size"], seed=run_cfg["seed"],
                loss=t["loss"], log_every=lg["every"], probe_ntk=lg["probe_ntk"],
                eval_every=lg["eval_every"], full_batch=t["full_batch"], device=device,
                dtype=_DTYPES[t["dtype"]])


def _failed(run_cfg: Mapping[str, Any], err: BaseException, wall: float, device: str | None
            ) -> dict[str, Any]:
    return {"status": "failed", "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=-3), "diverged_step": None, "metrics": {},
            "logs": [], "seed": run_cfg["seed"], "wall_time_s": wall, "device": device,
            "dtype": run_cfg["training"]["dtype"], "config": dict(run_cfg)}


def run(run_cfg: Mapping[str, Any], *, device: str | None = None,
        progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train one run config's network beside its linearization.

    Args:
        run_cfg: one element of :func:`weakcorr.config.expand`.
        device: ``"cpu"``/``"cuda"`` (None: CPU).
        progress: passed to :func:`weakcorr.train.paired_sgd`.

    Returns:
        The :meth:`weakcorr.train.RunResult.to_dict` record; errors other than divergence
        give a record with status ``failed`` and the error (nothing is raised), among them
        a run whose estimated peak memory does not fit in what is free (:func:`check_memory`,
        before the model is built): "needs ~X GiB, Y GiB available".
    """
    start = time.perf_counter()
    try:
        ds = load_data(run_cfg["data"], run_cfg["training"]["dtype"])
        check_memory(run_cfg, ds, device=device)
        model = build_model(run_cfg, ds.X_train.shape[1], ds.Y_train.shape[1])
        result = train.paired_sgd(model, ds, progress=progress, **_train_kwargs(run_cfg, device))
    except Exception as err:  # noqa: BLE001 - recorded as a failed run
        return _failed(run_cfg, err, time.perf_counter() - start, device)
    return _record(result, run_cfg)


def _available(device: str | None) -> int | None:
    """Free memory where the run's tensors live: the GPU's for CUDA, else the process's
    (cgroup limit or physical memory, :func:`weakcorr._memory.available_bytes`)."""
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    return _memory.available_bytes()


def check_memory(run_cfg: Mapping[str, Any], ds: Any = None, *, device: str | None = None,
                 seeds: int = 1) -> None:
    """The memory pre-flight of a run (issue 18): refuse it before it allocates when its
    estimated peak (:func:`weakcorr._memory.estimate_run_bytes`) exceeds the free memory.

    Args:
        run_cfg: a run config.
        ds: its loaded dataset (for the input and output sizes), or None for the dataset's
            known sizes.
        device: where it trains.
        seeds: seeds trained together.

    Raises:
        weakcorr._memory.InsufficientMemory: "needs ~X GiB, Y GiB available"; :func:`run`
            records it as a failed run and the sweep goes on.
    """
    if run_cfg["model"].get("factory") is not None:
        return  # the estimate counts an MLP's layers; a factory's model is known once built
    if run_cfg["model"].get("factory") is not None:
        return  # a model family of the user's: its memory is not known from the config
    dims: tuple[int | None, int | None] = (None, None)
    if ds is not None:
        dims = (int(ds.X_train[0].numel()), int(ds.Y_train.shape[1]))
    needed = _memory.estimate_run_bytes(run_cfg, *dims, seeds=seeds)
    width = run_cfg["model"]["width"]
    what = f"width {width}" + (f" with {seeds} seeds together" if seeds > 1 else "")
    _memory.preflight(needed, _available(device), what)


def _group_fits(configs: Sequence[Mapping[str, Any]], ds: Any, device: str | None) -> bool:
    """Whether a seed batch fits in memory together (else its seeds run one by one)."""
    try:
        check_memory(configs[0], ds, device=device, seeds=len(configs))
    except _memory.InsufficientMemory:
        return False
    return True


def _record(result: Any, run_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON record of a run: the result, with the run config as ``config`` and what
    ``paired_sgd`` recorded of its own arguments as ``train_config``."""
    record = result.to_dict()
    train_config = record.get("config")
    record["config"] = dict(run_cfg)
    if train_config:
        record["train_config"] = train_config
    return record


def run_group(configs: Sequence[Mapping[str, Any]], *, device: str | None = None
              ) -> list[dict[str, Any]]:
    """Train runs that differ only in their seed; together (stacked weights) when possible.

    With more than one config, a model that :mod:`weakcorr._vmap_train` supports and no
    ``logging.probe_ntk``, the seeds are trained together (same results as :func:`run` on
    each, to float tolerance); otherwise one after another. A seed batch whose estimated
    memory does not fit runs one seed at a time, and each seed is checked alone
    (:func:`check_memory`).

    Returns:
        One record per config, in order.
    """
    if len(configs) > 1 and not configs[0]["logging"]["probe_ntk"]:
        ds = load_data(configs[0]["data"], configs[0]["training"]["dtype"])
        if _group_fits(configs, ds, device):  # with the data loaded, as run() checks
            mlps = [build_model(c, ds.X_train.shape[1], ds.Y_train.shape[1]) for c in configs]
            if _vmap_train.supports(mlps):
                kwargs = _train_kwargs(configs[0], device)
                kwargs.pop("seed")
                results = _vmap_train.paired_sgd_seeds(
                    mlps, ds, seeds=[c["seed"] for c in configs], **kwargs)
                return [_record(res, c) for c, res in zip(configs, results, strict=True)]
    return [run(c, device=device) for c in configs]
