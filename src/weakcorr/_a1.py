"""The paper's App. A.1 experiment (Figs. 1–3): derivative correlations and linearization vs width.

A config (YAML, or the ``paper-a1`` / ``a1-demo`` presets) expands into one run per
(dataset, depth, activation, width, seed). :func:`run` computes, for one run:

* at initialisation, on the ``n_train`` training inputs: the exact diagonal C^{0,2} and C^{0,3}
  (Eq. 11, :func:`weakcorr.correlations.diagonal`) aggregated as in Eq. 25 (root mean square
  over outputs and inputs), the paper's sampled estimator (Eq. 25,
  :func:`weakcorr.correlations.paper_estimate`, |D| parameters per layer) beside them, the
  subordinate norms (Eq. 1) of C^{1,1} and C^{0,2} on input tuples with equal and with
  distinct inputs (Def. D.1; the maximum over tuples), and the Hessian/gradient ratio;
* for the first ``training.seeds`` seeds: f and f_lin trained side by side with full-batch
  gradient descent (:func:`weakcorr.train.paired_sgd`), the Eq. 24 difference C(f, f_lin) on
  test and train, both losses, and the test deviation every ``training.eval_every`` steps
  (Cor. 4.1).

The sweep itself (one JSON per run, resume, executors) lives in :mod:`weakcorr._a1_report`.

>>> cfg = load_config("a1-demo", ["model.widths=[8, 16]", "seeds=1"])
>>> len(expand(cfg)) == len(cfg.model.depths) * len(cfg.model.activations) * 2
True
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import pathlib
import platform
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import __version__, _factory, _limits, data, models, train
from . import correlations as C
from ._files import expand_user
from ._inputs import clip, describe, read_config_text
from .config import (MAX_DEPTH, MAX_SAMPLES, MAX_STEPS, _bool, _fail, _float, _int, _mapping,
                     _read_yaml, _seeds, _widths)
from .functional import functional

__all__ = [
    "A1Config", "CorrelationSettings", "DataSettings", "ModelSettings", "TrainingSettings",
    "expand", "from_dict", "load_config", "presets", "resolve_datasets", "run", "to_dict",
]

SCHEMA_VERSION = 1
DATASETS = ("mnist5k", "mnist", "fashion-mnist", "cifar10", "digits", "teacher")
FILE_DATASETS = ("mnist", "fashion-mnist", "cifar10")
ACTIVATIONS = tuple(a.value for a in models.Activation)
PARAMETERIZATIONS = tuple(p.value for p in models.Parameterization)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
_PRESETS = ("paper-a1", "a1-demo")


@dataclass(frozen=True)
class DataSettings:
    """Which inputs: ``n_train`` (the correlations' inputs too) and ``n_test`` per dataset.

    ``data_dir``: a folder holding ``mnist/``, ``fashion-mnist/``, ``cifar10/`` subfolders (or
    the files of one dataset directly); datasets whose files are not there are skipped.
    """

    n_train: int = 160
    n_test: int = 32
    seed: int = 0
    data_dir: str | None = None
    flatten: bool = True  # False: images [N, C, H, W] (CNN factories); left out of runs if True


@dataclass(frozen=True)
class ModelSettings:
    """MLPs ``d_in → n (× depth) → 10``: one per depth × activation × width; or one family of
    your own per width: ``factory: "MODULE:FUNCTION"`` with ``kwargs`` (``source_sha256``, the
    hash of its source file, is computed at load; depths, activations and the MLP's other
    fields then do not apply, and are empty)."""

    widths: tuple[int, ...]
    depths: tuple[int, ...] = (1, 2, 3)
    activations: tuple[str, ...] = ("relu", "erf", "sigmoid")
    parameterization: str = "ntk"
    sigma_w: float = 1.0
    sigma_b: float = 0.05
    bias: bool = True
    factory: str | None = None
    kwargs: tuple[tuple[str, Any], ...] = ()
    source_sha256: str | None = None


@dataclass(frozen=True)
class CorrelationSettings:
    """What is measured at initialisation (all with learning rate ``lr``)."""

    lr: float = 1.0
    params_per_layer: int = 60
    norm_tuples: int = 1
    norm_restarts: int = 4
    hessian_iters: int = 30
    enabled: bool = True


@dataclass(frozen=True)
class TrainingSettings:
    """Full-batch GD of f and f_lin for the first ``seeds`` seeds (0 = no training)."""

    steps: int = 1000
    lr: float = 1.0
    seeds: int = 1
    eval_every: int = 10
    log_every: int = 100
    loss: str = "mse"


@dataclass(frozen=True)
class A1Config:
    """A validated A.1 sweep: datasets × depths × activations × widths × seeds."""

    model: ModelSettings
    datasets: tuple[str, ...] = ("mnist5k",)
    data: DataSettings = field(default_factory=DataSettings)
    seeds: tuple[int, ...] = (0, 1, 2)
    correlations: CorrelationSettings = field(default_factory=CorrelationSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    dtype: str = "float32"
    name: str = "a1"
    description: str = ""


_SECTIONS: dict[str, type] = {"data": DataSettings, "model": ModelSettings,
                              "correlations": CorrelationSettings, "training": TrainingSettings}
_TOP = ("name", "description", "datasets", "data", "model", "seeds", "correlations", "training",
        "dtype")


# ----------------------------------------------------------------------------- validation


# Scalars, mappings, widths and seeds are validated by config's functions (the same rules and
# messages as sweep configs); what only A.1 has (lists of choices, non-negative numbers) is here.


def _num(path: str, value: Any, *, positive: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(_float(path, value))  # _float: ints beyond floats are refused
    if not ok or (value <= 0 if positive else value < 0):
        raise _fail(path, value, "a finite number " + ("> 0" if positive else ">= 0"))
    return float(value)


def _choices(path: str, value: Any, allowed: Sequence[str], *, many: bool) -> Any:
    items = value if many else [value]
    if many and (not isinstance(value, (list, tuple)) or not value):
        raise _fail(path, value, f"a non-empty list from {', '.join(allowed)}")
    for i, v in enumerate(items):
        if v not in allowed:
            where = f"{path}[{i}]" if many else path
            raise ValueError(f"`{where}` must be one of {', '.join(allowed)}, got {describe(v)}")
    if many and len(set(items)) != len(items):
        raise _fail(path, value, "a list without repeats")
    return tuple(items) if many else value


def _ints(path: str, value: Any, minimum: int, maximum: int | None = None, why: str = ""
          ) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail(path, value, f"a non-empty list of integers >= {minimum}")
    out = tuple(_int(f"{path}[{i}]", v, minimum=minimum, maximum=maximum, why=why)
                for i, v in enumerate(value))
    if len(set(out)) != len(out):
        raise _fail(path, value, "a list without repeats")
    return out


def _section(path: str, raw: Any, cls: type) -> dict[str, Any]:
    """``raw`` checked against the fields of ``cls`` (absent: all defaults)."""
    valid = tuple(f.name for f in dataclasses.fields(cls))
    return {} if raw is None else _mapping(path, raw, valid)


def from_dict(raw: Any) -> A1Config:
    """Validate a raw mapping (e.g. parsed YAML) into an :class:`A1Config`.

    Raises:
        ValueError: naming the field by its dotted path, the value and what it must be;
            unknown keys list the valid ones.
    """
    if not isinstance(raw, Mapping):
        raise _fail("config", raw, "a mapping with keys " + ", ".join(_TOP))
    unknown = [k for k in raw if k not in _TOP]
    if unknown:
        raise ValueError(f"unknown key `{clip(str(unknown[0]))}` at the top level; valid keys: "
                         f"{', '.join(_TOP)}")
    if "model" not in raw or not isinstance(raw["model"], Mapping) or "widths" not in raw["model"]:
        raise ValueError("`model.widths` is missing; add e.g. `model: {widths: [8, 16, 32]}`")
    m = _section("model", raw["model"], ModelSettings)
    model = _factory_model(m) if m.get("factory") is not None else None
    extra = [k for k in ("kwargs", "source_sha256") if m.get(k) is not None]
    if model is None and extra:
        raise ValueError(f"`model.{extra[0]}` needs `model.factory` (your model family, "
                         "'MODULE:FUNCTION'); add model.factory or remove model." + extra[0])
    model = model or ModelSettings(
        widths=_widths("model.widths", m["widths"]),
        depths=_ints("model.depths", m.get("depths", [1, 2, 3]), 1, MAX_DEPTH,
                     "the correlations of deeper networks take hours per run; the paper's A.1 "
                     "uses depths 1-3"),
        activations=_choices("model.activations", m.get("activations", ["relu", "erf", "sigmoid"]),
                             ACTIVATIONS, many=True),
        parameterization=_choices("model.parameterization", m.get("parameterization", "ntk"),
                                  PARAMETERIZATIONS, many=False),
        sigma_w=_num("model.sigma_w", m.get("sigma_w", 1.0)),
        sigma_b=_num("model.sigma_b", m.get("sigma_b", 0.05), positive=False),
        bias=_bool("model.bias", m.get("bias", True)),
    )
    d = _section("data", raw.get("data"), DataSettings)
    data_dir = d.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str):
        raise _fail("data.data_dir", data_dir, "a folder path or null")
    data_ = DataSettings(
        n_train=_int("data.n_train", d.get("n_train", 160), minimum=1, maximum=MAX_SAMPLES),
        n_test=_int("data.n_test", d.get("n_test", 32), minimum=1, maximum=MAX_SAMPLES),
        seed=_int("data.seed", d.get("seed", 0), minimum=0),
        data_dir=None if data_dir is None else str(expand_user(data_dir, "data.data_dir")),
        flatten=_bool("data.flatten", d.get("flatten", True)),
    )
    if not data_.flatten and model.factory is None:
        raise ValueError("`data.flatten` false needs `model.factory`: the built-in MLP takes flat "
                         "inputs; add a family of your own (model.factory, or --model), or drop "
                         "it")
    c = _section("correlations", raw.get("correlations"), CorrelationSettings)
    corr = CorrelationSettings(
        lr=_num("correlations.lr", c.get("lr", 1.0)),
        params_per_layer=_int("correlations.params_per_layer", c.get("params_per_layer", 60),
                              minimum=1),
        norm_tuples=_int("correlations.norm_tuples", c.get("norm_tuples", 1), minimum=0),
        norm_restarts=_int("correlations.norm_restarts", c.get("norm_restarts", 4), minimum=1),
        hessian_iters=_int("correlations.hessian_iters", c.get("hessian_iters", 30), minimum=0),
        enabled=_bool("correlations.enabled", c.get("enabled", True)),
    )
    if corr.norm_tuples and data_.n_train < 3:
        raise ValueError(f"`data.n_train` must be >= 3 for the distinct-input norm tuples, got "
                         f"{data_.n_train}; raise it or set correlations.norm_tuples=0")
    t = _section("training", raw.get("training"), TrainingSettings)
    training = TrainingSettings(
        steps=_int("training.steps", t.get("steps", 1000), minimum=1, maximum=MAX_STEPS),
        lr=_num("training.lr", t.get("lr", 1.0)),
        seeds=_int("training.seeds", t.get("seeds", 1), minimum=0),
        eval_every=_int("training.eval_every", t.get("eval_every", 10), minimum=1),
        log_every=_int("training.log_every", t.get("log_every", 100), minimum=1),
        loss=_choices("training.loss", t.get("loss", "mse"), ("mse", "cross_entropy"), many=False),
    )
    for k in ("name", "description"):
        if k in raw and not isinstance(raw[k], str):
            raise _fail(k, raw[k], "a string")
    datasets = _choices("datasets", raw.get("datasets", ["mnist5k"]), DATASETS, many=True)
    if training.loss == "cross_entropy" and "teacher" in datasets:
        raise ValueError("`training.loss` 'cross_entropy' does not apply to `datasets` entry "
                         "'teacher' (regression targets, not class probabilities: the loss can be "
                         "negative and means nothing); use training.loss: mse "
                         "or drop teacher from datasets")
    return A1Config(
        model=model,
        datasets=datasets,
        data=data_, seeds=_seeds(raw.get("seeds", 3)), correlations=corr, training=training,
        dtype=_choices("dtype", raw.get("dtype", "float32"), tuple(DTYPES), many=False),
        name=raw.get("name", "a1"), description=raw.get("description", ""),
    )


def _factory_model(m: Mapping[str, Any]) -> ModelSettings:
    """``model: {factory, kwargs, widths}``: checked as in sweep configs (the module is located
    and its source hashed, not imported; the command imports and checks it before any run)."""
    spec, kwargs, sha = _factory.config_fields(m)
    return ModelSettings(widths=_widths("model.widths", m["widths"]), depths=(), activations=(),
                         factory=spec, kwargs=tuple(sorted(kwargs.items())), source_sha256=sha)


def to_dict(cfg: A1Config) -> dict[str, Any]:
    """A plain YAML/JSON-safe mapping that :func:`from_dict` turns back into ``cfg`` (the
    factory fields only with a factory, then without the MLP's; ``data.flatten`` only when
    False: older directories keep their protocol)."""
    out = dataclasses.asdict(cfg)
    if cfg.model.factory is None:
        for k in ("factory", "kwargs", "source_sha256"):
            del out["model"][k]
    else:
        out["model"] = {"widths": out["model"]["widths"], "factory": cfg.model.factory,
                        "kwargs": dict(cfg.model.kwargs), "source_sha256": cfg.model.source_sha256}
    if cfg.data.flatten:
        del out["data"]["flatten"]

    def lists(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: lists(x) for k, x in v.items()}
        return list(v) if isinstance(v, tuple) else v

    return lists(out)


def presets() -> list[str]:
    """The A.1 presets shipped with weakcorr."""
    return list(_PRESETS)


def _override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"`--set` takes key=value (e.g. training.steps=50), got "
                         f"{clip(repr(item))}")
    value = _read_yaml(text, f"the value in --set {clip(repr(item))}")
    keys = key.strip().split(".")
    if keys[0] not in _TOP:
        raise ValueError(f"unknown key `{clip(keys[0])}` in --set {clip(repr(item))}; valid keys: "
                         f"{', '.join(_TOP)}")
    if len(keys) == 1:
        raw[keys[0]] = value
        return
    if len(keys) != 2 or keys[0] not in _SECTIONS:
        raise ValueError(f"--set {clip(repr(item))}: only {', '.join(_SECTIONS)} have sub-keys "
                         "(write section.key=VALUE)")
    node = raw.setdefault(keys[0], {})
    if not isinstance(node, dict):
        raise ValueError(f"--set {clip(repr(item))}: `{keys[0]}` is not a mapping in the config")
    node[keys[1]] = value


def load_config(source: str | pathlib.Path | Mapping[str, Any],
                overrides: Sequence[str] = (), *, model: str | None = None,
                model_kwargs: Mapping[str, Any] | None = None,
                flatten: bool | None = None) -> A1Config:
    """Load an A.1 config from a preset name, a YAML file or a mapping, with ``--set`` overrides.

    ``model`` (``--model``) replaces the config's MLP by that family at the config's widths,
    with ``model_kwargs``; ``flatten`` (``--no-flatten``) sets ``data.flatten``.

    Raises:
        FileNotFoundError: ``source`` is neither a preset nor a file.
        ValueError: invalid YAML or fields (see :func:`from_dict`).
    """
    if isinstance(source, Mapping):
        raw: Any = dict(source)
    elif isinstance(source, str) and source in _PRESETS and not pathlib.Path(source).exists():
        text = (importlib.resources.files("weakcorr") / "presets" / f"{source}.yaml").read_text()
        raw = _read_yaml(text, f"preset {source!r}")
    elif pathlib.Path(source).is_file():
        raw = _read_yaml(read_config_text(pathlib.Path(source)), str(source))
    else:
        raise FileNotFoundError(f"no config file {clip(repr(str(source)))} and no A.1 preset of that name; "
                                f"presets: {', '.join(_PRESETS)}")
    if not isinstance(raw, dict):
        raise ValueError(f"{clip(str(source))} must hold a YAML mapping, got {type(raw).__name__}")
    raw = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in raw.items()}
    for item in overrides:
        _override(raw, item)
    if model is not None:
        widths = raw.get("model", {}).get("widths") if isinstance(raw.get("model"), dict) else None
        raw["model"] = {"widths": widths, "factory": model, "kwargs": dict(model_kwargs or {})}
        if widths is None:
            del raw["model"]["widths"]
    if flatten is not None:
        raw["data"] = {**(raw.get("data") or {}), "flatten": bool(flatten)}
    try:
        return from_dict(raw)
    except ValueError as err:
        if model is None and flatten is None:
            raise
        flags = (("`model.factory`", "`--model`"), ("`model.kwargs`", "`--model-kwargs`"),
                 ("`data.flatten` false", "`--no-flatten`"))
        msg = str(err)
        for field_, flag in flags:
            msg = msg.replace(field_, flag)
        raise ValueError(msg) from None


# ----------------------------------------------------------------------------- expansion


def _dataset_dir(name: str, data_dir: str | None) -> str | None:
    """Where ``name``'s files are: ``data_dir/name`` if it exists, else ``data_dir``."""
    if name not in FILE_DATASETS or data_dir is None:
        return None
    sub = pathlib.Path(data_dir) / name
    return str(sub) if sub.is_dir() else data_dir


def _load(name: str, n_train: int, n_test: int, seed: int, data_dir: str | None, dtype: str,
          *, flatten: bool = True):
    opts = {"grayscale": True} if name == "cifar10" else {}
    return data.load(name, n_train=n_train, n_test=n_test, seed=seed,
                     data_dir=_dataset_dir(name, data_dir), dtype=DTYPES[dtype], flatten=flatten,
                     **opts)


def resolve_datasets(cfg: A1Config) -> tuple[list[str], dict[str, str]]:
    """The configured datasets that load, and ``{name: reason}`` for those skipped.

    File-based datasets (MNIST, Fashion-MNIST, CIFAR-10) are skipped when ``data.data_dir``
    is unset or lacks their files; the bundled ones must load (errors propagate).
    """
    ok: list[str] = []
    skipped: dict[str, str] = {}
    for name in cfg.datasets:
        if name in FILE_DATASETS:
            if cfg.data.data_dir is None:
                skipped[name] = "data.data_dir is not set"
                continue
            try:
                _load(name, cfg.data.n_train, cfg.data.n_test, cfg.data.seed, cfg.data.data_dir,
                      cfg.dtype)
            except (FileNotFoundError, ValueError) as err:
                skipped[name] = str(err).splitlines()[0]
                continue
        else:
            _load(name, cfg.data.n_train, cfg.data.n_test, cfg.data.seed, None, cfg.dtype)
        ok.append(name)
    return ok, skipped


def expand(cfg: A1Config, datasets: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One JSON-safe run config per (dataset, depth, activation, width, seed).

    Ordered by width first (then dataset, depth, activation, seed), so that an interrupted
    sweep has every combination at its smaller widths.
    """
    names = cfg.datasets if datasets is None else tuple(datasets)
    m, t = cfg.model, cfg.training
    train_seeds = set(cfg.seeds[: t.seeds])
    out = []
    if m.factory is not None:  # one member of the family per width
        return [{"kind": "a1",
                 "data": _run_data(cfg, name),
                 "model": {"width": int(w), "factory": m.factory, "kwargs": dict(m.kwargs),
                           "source_sha256": m.source_sha256},
                 "correlations": (dataclasses.asdict(cfg.correlations)
                                  if cfg.correlations.enabled else None),
                 "training": dataclasses.asdict(t) if s in train_seeds else None,
                 "dtype": cfg.dtype, "seed": int(s)}
                for w in sorted(m.widths) for name in names for s in cfg.seeds]
    for w in sorted(m.widths):
        for name in names:
            for depth in m.depths:
                for act in m.activations:
                    for s in cfg.seeds:
                        out.append({
                            "kind": "a1",
                            "data": {"name": name, "n_train": cfg.data.n_train,
                                     "n_test": cfg.data.n_test, "seed": cfg.data.seed,
                                     "data_dir": _dataset_dir(name, cfg.data.data_dir)},
                            "model": {"width": int(w), "depth": depth, "activation": act,
                                      "parameterization": m.parameterization,
                                      "sigma_w": m.sigma_w, "sigma_b": m.sigma_b, "bias": m.bias},
                            "correlations": (dataclasses.asdict(cfg.correlations)
                                             if cfg.correlations.enabled else None),
                            "training": dataclasses.asdict(t) if s in train_seeds else None,
                            "dtype": cfg.dtype,
                            "seed": int(s),
                        })
    return out


# ----------------------------------------------------------------------------- one run

_DATA_CACHE: dict[tuple[Any, ...], Any] = {}


def _run_data(cfg: A1Config, name: str) -> dict[str, Any]:
    out = {"name": name, "n_train": cfg.data.n_train, "n_test": cfg.data.n_test,
           "seed": cfg.data.seed, "data_dir": _dataset_dir(name, cfg.data.data_dir)}
    if not cfg.data.flatten:
        out["flatten"] = False
    return out


def _dataset(run_cfg: Mapping[str, Any]):
    d = run_cfg["data"]
    flatten = bool(d.get("flatten", True))
    key = (d["name"], d["n_train"], d["n_test"], d["seed"], d["data_dir"], run_cfg["dtype"],
           flatten)
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) > 4:
            _DATA_CACHE.clear()
        opts = {"grayscale": True} if d["name"] == "cifar10" else {}
        _DATA_CACHE[key] = data.load(d["name"], n_train=d["n_train"], n_test=d["n_test"],
                                     seed=d["seed"], data_dir=d["data_dir"], flatten=flatten,
                                     dtype=DTYPES[run_cfg["dtype"]], **opts)
    return _DATA_CACHE[key]


def build_model(run_cfg: Mapping[str, Any], d_in: int, d_out: int) -> torch.nn.Module:
    """The run's MLP at initialisation, seeded by the run's seed (or its family's member:
    :func:`weakcorr._factory.build`, refused when the factory's source changed)."""
    m = run_cfg["model"]
    if m.get("factory") is not None:
        return _factory.build(m, run_cfg["seed"], name="model.factory").to(
            DTYPES[run_cfg["dtype"]])
    return models.mlp(d_in, [m["width"]] * m["depth"], d_out, activation=m["activation"],
                      parameterization=m["parameterization"], bias=m["bias"],
                      sigma_w=m["sigma_w"], sigma_b=m["sigma_b"], seed=run_cfg["seed"],
                      dtype=DTYPES[run_cfg["dtype"]])


def _sig(values: torch.Tensor, digits: int = 5) -> list[float]:
    """Values rounded to ``digits`` significant digits (compact JSON samples)."""
    return [float(f"{v:.{digits}g}") for v in values.double().flatten().tolist()]


def _norm_value(fm, x0, xs, *, D: int, lr: float, restarts: int, seed: int) -> tuple[float, bool]:
    gen = torch.Generator().manual_seed(seed)
    res = C.norm(fm, x0, xs, D=D, lr=lr, restarts=restarts, generator=gen)
    return float(res.value), bool(res.converged)


def hessian_gradient(fm, x: torch.Tensor, *, output: int = 0, max_iter: int = 30,
                     seed: int = 0) -> tuple[float, bool]:
    """‖∇²f_output(x)‖₂ / ‖∇f_output(x)‖ and whether Lanczos converged (tol 1e-4).

    An unconverged Lanczos value is a lower bound of the spectral norm (within ~0.1 % after 30
    steps at width 1024 in our measurements); it is reported with ``converged=False``.
    """
    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unconverged: recorded, not raised
        h = C.hessian_spectral_norm(fm, x, output=output, max_iter=max_iter, tol=1e-4,
                                    generator=gen)
    params = {k: v.detach() for k, v in fm.params.items()}
    g = torch.func.grad(lambda p: fm(p, x)[0, output])(params)
    g_norm = math.sqrt(sum(float(v.double().pow(2).sum()) for v in g.values()))
    return (h.value / g_norm if g_norm > 0 else math.nan), bool(h.converged)


def _init_metrics(fm, X: torch.Tensor, c: Mapping[str, Any], seed: int,
                  timings: dict[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    metrics: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    lr = c["lr"]
    t0 = time.perf_counter()
    diag = C.diagonal(fm, X, orders=(2, 3), lr=lr)
    for k in (2, 3):
        v = diag[k].double()
        metrics[f"c{k}_exact"] = float(v.pow(2).mean().sqrt())  # Eq. 25 aggregation, exact
        metrics[f"c{k}_mean_abs"] = float(v.abs().mean())
        metrics[f"c{k}_max_abs"] = float(v.abs().max())
        samples[f"c{k}_abs"] = _sig(v.abs())
    timings["exact_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # ‖Θ_n − Θ∞‖_F/‖Θ∞‖_F on (at most) 16 inputs; None for models weakcorr.limits cannot take
    metrics["kernel_distance"] = _limits.kernel_distance(fm.module, X[:16])
    timings["kernel_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(10_000 + seed)
    for k in (2, 3):
        metrics[f"c{k}_paper"] = C.paper_estimate(fm, X, d=k, lr=lr, generator=gen,
                                                  params_per_layer=c["params_per_layer"])
    timings["paper_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for kind in ("same", "distinct"):
        for name in ("c11", "c02"):
            metrics[f"{name}_{kind}"] = None
            metrics[f"{name}_{kind}_converged"] = None
    for j in range(c["norm_tuples"]):
        i0, i1, i2 = (3 * j) % len(X), (3 * j + 1) % len(X), (3 * j + 2) % len(X)
        x0, x1, x2 = X[i0:i0 + 1], X[i1:i1 + 1], X[i2:i2 + 1]
        for kind, xs11, xs02 in (("same", [x0], [x0, x0]), ("distinct", [x1], [x1, x2])):
            for name, D, xs in (("c11", 1, xs11), ("c02", 0, xs02)):
                value, conv = _norm_value(fm, x0, xs, D=D, lr=lr, restarts=c["norm_restarts"],
                                          seed=seed + j)
                key = f"{name}_{kind}"
                if metrics[key] is None or value > metrics[key]:
                    metrics[key], metrics[f"{key}_converged"] = value, conv
    timings["norms_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics["hg_ratio"], metrics["hg_converged"] = (None, None)
    if c["hessian_iters"]:
        metrics["hg_ratio"], metrics["hg_converged"] = hessian_gradient(
            fm, X[:1], max_iter=c["hessian_iters"], seed=seed)
    timings["hessian_s"] = time.perf_counter() - t0
    return metrics, samples


def run(run_cfg: Mapping[str, Any], *, device: str | None = None,
        progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Compute one A.1 run (see the module docstring); never raises for a failing run.

    Args:
        run_cfg: one element of :func:`expand`.
        device: ``"cpu"`` (default) or ``"cuda"``.
        progress: passed to the training (``progress(step, steps)``).

    Returns:
        A record: ``status`` (``ok``/``diverged``/``failed``), ``metrics`` (init quantities,
        then the trained ones from :class:`weakcorr.train.RunResult` when trained),
        ``samples`` (|C^{0,2}|, |C^{0,3}| diagonal entries, 5 significant digits), ``logs``
        (training logs: ``mse_test`` every ``eval_every`` steps), ``timings``, ``n_params``,
        ``wall_time_s``, ``config``.
    """
    start = time.perf_counter()
    dev = torch.device(device or "cpu")
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "kind": "a1", "status": "ok", "error": None,
        "seed": run_cfg["seed"], "config": dict(run_cfg), "device": str(dev),
        "dtype": run_cfg["dtype"], "metrics": {}, "samples": {}, "logs": [], "timings": {},
        "versions": {"weakcorr": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }
    try:
        ds = _dataset(run_cfg)
        model = build_model(run_cfg, ds.X_train.shape[1], ds.Y_train.shape[1]).to(dev)
        fm = functional(model)
        record["n_params"] = fm.n_params
        if run_cfg.get("correlations"):
            metrics, samples = _init_metrics(fm, ds.X_train.to(dev), run_cfg["correlations"],
                                             run_cfg["seed"], record["timings"])
            record["metrics"].update(metrics)
            record["samples"] = samples
        t = run_cfg.get("training")
        if t:
            t0 = time.perf_counter()
            res = train.paired_sgd(model, ds, lr=t["lr"], steps=t["steps"], batch_size=1,
                                   seed=run_cfg["seed"], loss=t["loss"], log_every=t["log_every"],
                                   eval_every=t["eval_every"], full_batch=True, device=dev,
                                   progress=progress)
            record["timings"]["training_s"] = time.perf_counter() - t0
            record["status"], record["diverged_step"] = res.status, res.diverged_step
            record["metrics"].update(res.to_dict()["metrics"])
            record["logs"] = res.to_dict()["logs"]
    except Exception as err:  # noqa: BLE001 - a failed run is recorded, not raised
        record.update(status="failed", error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc(limit=-3))
    record["wall_time_s"] = time.perf_counter() - start
    return record
