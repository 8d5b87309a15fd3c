"""Experiment configs for width sweeps (paper App. A.2, Fig. 4), validated on load.

A sweep config is a YAML mapping with the sections ``model``, ``data``, ``training``,
``seeds``, ``logging`` (and optional ``name``, ``description``, ``execution``). It expands into
one run per (width, α, seed); each run trains a network beside its linearization with

.. math:: \\eta = \\eta_0 \\, n^{\\alpha} \\, r(n)

(paper Eq. 29, with an optional reparametrisation factor ``r(n)`` written as an expression of
``n``, e.g. ``"sqrt(n) / 32"``). Presets ship inside the package: ``paper-a2`` (the paper's
protocol, for GPUs), ``cpu`` (the same protocol on MNIST-5k for a 2-core CPU) and ``demo``
(end to end in under three minutes).

Every validation error is a ``ValueError`` that names the field by its dotted path
(``training.alphas[2]``), what was received (at most ~80 characters of it) and how to fix it.
Text is bounded before it is parsed (:mod:`weakcorr._inputs`: 1 MB per file or ``--set``
value, YAML nesting, alias expansion, no tags; ``lr_factor`` length, operators and nesting),
and every size a config names has a bound given with its reason (:data:`MAX_DEPTH`,
:data:`MAX_WIDTH`, :data:`MAX_STEPS`, :data:`MAX_SAMPLES`, :data:`MAX_RUNS`, ...); alphas
within :data:`ALPHA_TOL` of each other are refused, since the report would merge them.

>>> from weakcorr import config
>>> cfg = config.load("demo")
>>> runs = config.expand(cfg)
>>> len(runs) == len(cfg.model.widths) * len(cfg.training.alphas) * len(cfg.seeds)
True
>>> config.lr_at(config.TrainingConfig(steps=1, batch_size=1, lr0=0.1, alphas=(-1.0,)), 100, -1.0)
0.001
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import enum
import functools
import importlib.resources
import math
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _inputs
from ._files import expand_user

__all__ = [
    "Activation", "DataConfig", "ExecutionConfig", "LoggingConfig", "Loss", "ModelConfig",
    "Parameterization", "SweepConfig", "TrainingConfig", "apply_overrides", "evaluate_expression",
    "expand", "from_dict", "geometric_widths", "list_presets", "load", "lr_at", "to_dict",
]


class Activation(enum.StrEnum):
    """Hidden-layer activations of ``models.mlp``."""

    RELU = "relu"
    GELU = "gelu"
    ERF = "erf"
    SIGMOID = "sigmoid"
    TANH = "tanh"


class Parameterization(enum.StrEnum):
    """Parameterizations of ``models.mlp``."""

    STANDARD = "standard"
    NTK = "ntk"
    MUP = "mup"


class Loss(enum.StrEnum):
    """Training losses of ``train.paired_sgd``."""

    MSE = "mse"
    CROSS_ENTROPY = "cross_entropy"


DATASETS = ("mnist5k", "digits", "teacher", "mnist", "fashion-mnist", "cifar10")
DTYPES = ("float32", "float64")
# Samples in the bundled datasets (weakcorr.data.load): n_train + n_test must fit in them.
BUNDLED_SIZES = {"mnist5k": 5000, "digits": 1797}
MAX_SEED = 2**63 - 1  # seeds seed torch generators (int64), as in `weakcorr correlations`
MAX_SEEDS = 100_000  # seeds per sweep (the paper uses 100)
_WHY_SEEDS = "the paper uses 100 seeds, and every seed is one run per width and alpha"
_MAX_WIDTHS = 10_000  # widths of a {start, stop, per_doubling} spec or a list
# Bounds on every size a config names, with the reason the message gives (issue 18); what fits
# in memory is checked per run before it allocates (weakcorr._memory.preflight).
MAX_WIDTH = 10_000_000
_WHY_WIDTH = ("a hidden layer of width 10^7 on MNIST holds 7.8e9 first-layer weights (31 GB per "
              "copy of θ in float32)")
MAX_DEPTH = 100
_WHY_DEPTH = ("every hidden layer is a Python step of each pass, so deeper networks train for "
              "hours per run; the paper's have 1-3 hidden layers")
MAX_STEPS = 10_000_000
_WHY_STEPS = "the paper trains 250 steps; 10^7 steps of even the smallest network take days"
MAX_LOG_ENTRIES = 1_000_000  # log entries per run record (steps / logging.every)
MAX_SAMPLES = 10_000_000
_WHY_SAMPLES = "more samples than any dataset weakcorr reads (MNIST has 70,000)"
MAX_ALPHAS = 1_000
MAX_SEED_BATCH = 1_024
MAX_RUNS = 1_000_000  # runs of one grid, each a record file
# alphas this close are one alpha to the report (weakcorr.analysis._KEY_TOL): refused, not merged
ALPHA_TOL = 1e-8


@dataclass(frozen=True)
class ModelConfig:
    """The MLP ``d_in → n → … → n → d_out`` (``depth`` hidden layers of width ``n``), or a
    family of your own: ``factory: "MODULE:FUNCTION"`` (or ``path/to/file.py:FUNCTION``),
    ``make_model(width, seed, **kwargs) -> nn.Module`` (:mod:`weakcorr._factory`), with
    ``kwargs``; ``source_sha256`` is the factory's source file hash, computed at load, so that
    an edited factory is a new protocol (new run ids). The MLP fields do not apply to a factory.
    """

    widths: tuple[int, ...]
    depth: int = 2
    activation: str = Activation.GELU.value
    parameterization: str = Parameterization.STANDARD.value
    output_scale: float = 1.0
    bias: bool = True
    sigma_w: float | None = None
    sigma_b: float | None = None
    factory: str | None = None
    # keyword arguments of the factory, as sorted (key, value) pairs
    kwargs: tuple[tuple[str, Any], ...] = ()
    source_sha256: str | None = None


@dataclass(frozen=True)
class DataConfig:
    """The dataset (``weakcorr.data.load``); ``seed`` picks the subset, the same for all runs."""

    name: str
    n_train: int
    n_test: int
    data_dir: str | None = None
    seed: int = 0
    # Dataset options of ``data.load`` (the teacher's d_in, d_out, teacher_width, noise), as
    # sorted (key, value) pairs; left out of run configs (and so of run ids) when empty.
    options: tuple[tuple[str, Any], ...] = ()
    # False keeps images as [N, C, H, W] (for CNN factories); left out of run configs when True.
    flatten: bool = True


@dataclass(frozen=True)
class TrainingConfig:
    """Paired SGD of f and f_lin: ``lr = lr0 · n**alpha · r(n)`` for each ``alpha``."""

    steps: int
    batch_size: int
    lr0: float
    alphas: tuple[float, ...]
    lr_factor: str = "1"
    loss: str = Loss.MSE.value
    dtype: str = "float32"
    full_batch: bool = False


@dataclass(frozen=True)
class LoggingConfig:
    """Step-wise logs: losses and batch discrepancy every ``every`` steps."""

    every: int = 10
    eval_every: int | None = None
    probe_ntk: bool = False


@dataclass(frozen=True)
class ExecutionConfig:
    """How runs execute; never part of a run's identity (its hash).

    ``seed_batch``: train up to this many seeds of one (width, α) together (stacked weights;
    same results as one after another), only for widths up to ``seed_batch_max_width``. On CPU
    it pays at small widths; from width 512 one seed's products already run at the machine's
    peak (benchmarks/RESULTS.md, "Seeds trained together").
    """

    seed_batch: int = 1
    seed_batch_max_width: int = 256


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep: the grid widths × alphas × seeds over one model/data/training setup."""

    model: ModelConfig
    data: DataConfig
    training: TrainingConfig
    seeds: tuple[int, ...]
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    name: str = "sweep"
    description: str = ""


_SECTIONS: dict[str, type] = {
    "model": ModelConfig, "data": DataConfig, "training": TrainingConfig,
    "logging": LoggingConfig, "execution": ExecutionConfig,
}
_TOP_KEYS = ("name", "description", "model", "data", "training", "seeds", "logging", "execution")


# --------------------------------------------------------------------------- r(n) expressions

@functools.lru_cache(maxsize=64)
def _parse_expression(expr: str) -> ast.expr:
    """:func:`weakcorr._inputs.parse_expression`, cached (every width evaluates the same r(n))."""
    return _inputs.parse_expression(expr)


def evaluate_expression(expr: str, n: float) -> float:
    """Evaluate an arithmetic expression of ``n`` without ``eval``.

    Args:
        expr: numbers, the variable ``n``, ``+ - * / **``, parentheses and the functions
            ``sqrt``, ``log``, ``exp`` (e.g. ``"sqrt(n) / 32"``).
        n: the width.

    Returns:
        The value as a float.

    Raises:
        ValueError: if ``expr`` uses anything else, is longer than 1,000 characters, has
            more than 100 operators or 20 nested parentheses, or cannot be evaluated at ``n``.
        TypeError: if ``expr`` is not a string.

    >>> evaluate_expression("2 * sqrt(n) - 1", 16)
    7.0
    """
    if not isinstance(expr, str):
        raise TypeError(f"`expr` must be a string such as 'sqrt(n) / 32', got {_describe(expr)}")
    return _inputs.evaluate(expr, n, _parse_expression(expr))


def lr_at(training: TrainingConfig, width: int, alpha: float) -> float:
    """The learning rate ``lr0 · width**alpha · r(width)`` (paper Eq. 29 times ``r``)."""
    return training.lr0 * float(width) ** alpha * evaluate_expression(training.lr_factor, width)


def geometric_widths(start: int, stop: int, per_doubling: int) -> tuple[int, ...]:
    """Widths ``round(start · 2**(k / per_doubling))`` up to ``stop`` (paper Eq. 28).

    >>> geometric_widths(2048, 19484, 4)[:5]
    (2048, 2435, 2896, 3444, 4096)
    """
    out: list[int] = []
    k = 0
    while (w := start * 2.0 ** (k / per_doubling)) <= stop * (1 + 1e-9):
        out.append(int(math.floor(w + 0.5)))
        k += 1
    return tuple(out)


# --------------------------------------------------------------------------- validation


def _describe(value: Any) -> str:
    return _inputs.describe(value)  # at most ~80 characters of the value, bounded in time


def _fail(path: str, value: Any, need: str) -> ValueError:
    return ValueError(f"`{path}` must be {need}, got {_describe(value)}")


def _int(path: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
         why: str = "") -> int:
    """``value`` as an int in [minimum, maximum]; ``why`` (the reason for the maximum) is
    appended to the message of a value above it."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _fail(path, value, "an integer" + (f" >= {minimum}" if minimum is not None else ""))
    if minimum is not None and value < minimum:
        raise _fail(path, value, f"an integer >= {minimum}")
    if maximum is not None and value > maximum:
        error = _fail(path, value, f"an integer <= {maximum}")
        raise ValueError(f"{error}; {why}" if why else str(error))
    return int(value)


def _float(path: str, value: Any, *, positive: bool = False) -> float:
    # math.isfinite raises OverflowError on an int beyond floats: such ints are not finite here
    huge = isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**1023
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or huge
            or not math.isfinite(value)):
        raise _fail(path, value, "a finite number" + (" > 0" if positive else "") + " (e.g. 0.1)")
    if positive and value <= 0:
        raise _fail(path, value, "a number > 0")
    return float(value)


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, value, "true or false")
    return value


def _choice(path: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"`{path}` must be one of {', '.join(map(repr, allowed))}, got {_describe(value)}"
        )
    return value


def _str(path: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _fail(path, value, "a string" + (" or null" if optional else ""))
    return value


def _mapping(path: str, value: Any, valid: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, value, f"a mapping with keys {', '.join(valid)}")
    unknown = [k for k in value if k not in valid]
    if unknown:
        where = f"in `{path}`" if path else "at the top level"
        raise ValueError(
            f"unknown key `{(path + '.') if path else ''}{_inputs.clip(str(unknown[0]))}` {where}; "
            f"valid keys: {', '.join(valid)}"
        )
    return dict(value)


def _required(path: str, raw: Mapping[str, Any], key: str, example: str) -> Any:
    if key not in raw:
        raise ValueError(f"`{path}.{key}` is missing; add it, e.g. `{key}: {example}`")
    return raw[key]


def _widths(path: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, Mapping):
        spec = _mapping(path, value, ("start", "stop", "per_doubling"))
        for key, example in (("start", "64"), ("stop", "1024"), ("per_doubling", "4")):
            _required(path, spec, key, example)
        start = _int(f"{path}.start", spec["start"], minimum=1)
        stop = _int(f"{path}.stop", spec["stop"], minimum=start, maximum=MAX_WIDTH,
                    why=_WHY_WIDTH)
        per = _int(f"{path}.per_doubling", spec["per_doubling"], minimum=1)
        text = f"{{start: {start}, stop: {stop}, per_doubling: {per}}}"
        count = per * math.log2(stop / start) + 1
        if count > _MAX_WIDTHS:
            raise ValueError(f"`{path}` = {text} gives about {count:.0f} widths, more than "
                             f"{_MAX_WIDTHS}; use a smaller per_doubling")
        widths = geometric_widths(start, stop, per)
        distinct = len(set(widths))
        if distinct < len(widths):
            # per_doubling <= safe puts consecutive widths >= 1 apart: rounding keeps them apart
            safe = max(1, int(1 / math.log2(1 + 1 / start)))
            raise ValueError(
                f"`{path}.per_doubling` = {per} repeats widths: {text} gives {len(widths)} widths "
                f"but only {distinct} distinct ones after rounding to integers; use a smaller "
                f"per_doubling (at most {safe} keeps every width from {start} distinct)"
            )
        return widths
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail(path, value, "a non-empty list of integers or {start, stop, per_doubling}")
    if len(value) > _MAX_WIDTHS:
        raise ValueError(f"`{path}` must list at most {_MAX_WIDTHS:,} widths, got {len(value):,}; "
                         "use fewer widths")
    widths = tuple(_int(f"{path}[{i}]", w, minimum=1, maximum=MAX_WIDTH, why=_WHY_WIDTH)
                   for i, w in enumerate(value))
    if len(set(widths)) != len(widths):
        raise _fail(path, list(value), "a list without repeated widths")
    return widths


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, Mapping):
        spec = _mapping("seeds", value, ("start", "count"))
        start = _int("seeds.start", spec.get("start", 0), minimum=0, maximum=MAX_SEED)
        count = _int("seeds.count", _required("seeds", spec, "count", "5"), minimum=1,
                     maximum=MAX_SEEDS, why=_WHY_SEEDS)
        if start + count - 1 > MAX_SEED:
            raise ValueError(f"`seeds.count` = {count} from seeds.start = {start} reaches seed "
                             f"{start + count - 1}, but seeds must be <= {MAX_SEED} (they seed "
                             "torch generators); lower seeds.start or seeds.count")
        return tuple(range(start, start + count))
    if isinstance(value, (list, tuple)):
        if not value:
            raise _fail("seeds", value, "a count, a non-empty list or {start, count}")
        if len(value) > MAX_SEEDS:
            raise ValueError(f"`seeds` must list at most {MAX_SEEDS} seeds, got {len(value)}; "
                             f"{_WHY_SEEDS}: use fewer seeds")
        seeds = tuple(_int(f"seeds[{i}]", s, minimum=0, maximum=MAX_SEED)
                      for i, s in enumerate(value))
        if len(set(seeds)) != len(seeds):
            raise _fail("seeds", list(value), "a list without repeated seeds")
        return seeds
    return tuple(range(_int("seeds", value, minimum=1, maximum=MAX_SEEDS, why=_WHY_SEEDS)))


_FACTORY_FIELDS = ("factory", "kwargs", "source_sha256")  # _factory.FACTORY_FIELDS


def _factory_model(raw: Mapping[str, Any]) -> ModelConfig:
    """``model: {factory: "MODULE:FUNCTION", kwargs: {...}, widths: [...]}``: the spec is parsed
    and its source file hashed here (the module is located, not imported); the factory is
    imported and its signature checked before the first run (``experiments.check_data``)."""
    from . import _factory

    spec, kwargs, sha = _factory.config_fields(raw)
    return ModelConfig(
        widths=_widths("model.widths", _required("model", raw, "widths", "[64, 128, 256]")),
        factory=spec, kwargs=tuple(sorted(kwargs.items())), source_sha256=sha)


def _model(raw: Any) -> ModelConfig:
    raw = _mapping("model", raw, _field_names(ModelConfig))
    if raw.get("factory") is not None:
        return _factory_model(raw)
    extra = [k for k in _FACTORY_FIELDS if raw.get(k) is not None]
    if extra:
        raise ValueError(f"`model.{extra[0]}` needs `model.factory` (your model family, "
                         "'MODULE:FUNCTION'); add model.factory or remove model." + extra[0])
    sigma_w = raw.get("sigma_w")
    sigma_b = raw.get("sigma_b")
    sigma = {"sigma_w": None if sigma_w is None else _float("model.sigma_w", sigma_w, positive=True),
             "sigma_b": None if sigma_b is None else _float("model.sigma_b", sigma_b)}
    if sigma["sigma_b"] is not None and sigma["sigma_b"] < 0:
        raise _fail("model.sigma_b", sigma_b, "a number >= 0")
    return ModelConfig(
        widths=_widths("model.widths", _required("model", raw, "widths", "[64, 128, 256]")),
        depth=_int("model.depth", raw.get("depth", 2), minimum=1, maximum=MAX_DEPTH,
                   why=_WHY_DEPTH),
        activation=_choice("model.activation", raw.get("activation", "gelu"),
                           tuple(a.value for a in Activation)),
        parameterization=_choice("model.parameterization", raw.get("parameterization", "standard"),
                                 tuple(p.value for p in Parameterization)),
        output_scale=_float("model.output_scale", raw.get("output_scale", 1.0), positive=True),
        bias=_bool("model.bias", raw.get("bias", True)),
        **sigma,
    )


_TEACHER_OPTIONS = {"d_in": "int", "d_out": "int", "teacher_width": "int", "noise": "float"}


def _data_options(raw: Any, name: Any) -> tuple[tuple[str, Any], ...]:
    """``data.options``: the teacher's sizes (``{d_in: 784, d_out: 10}`` for MNIST's shape)."""
    if raw is None or raw == {}:
        return ()
    if name != "teacher":
        raise ValueError(f"`data.options` applies to data.name 'teacher' only, got data.name "
                         f"{_describe(name)}; remove data.options")
    raw = _mapping("data.options", raw, tuple(_TEACHER_OPTIONS))
    out = {k: (_int(f"data.options.{k}", v, minimum=1, maximum=1_000_000)
               if _TEACHER_OPTIONS[k] == "int"
               else _float(f"data.options.{k}", v))
           for k, v in raw.items()}
    if out.get("noise", 0.0) < 0:
        raise _fail("data.options.noise", out["noise"], "a number >= 0")
    return tuple(sorted(out.items()))


def _data(raw: Any) -> DataConfig:
    raw = _mapping("data", raw, _field_names(DataConfig))
    data_dir = _str("data.data_dir", raw.get("data_dir"), optional=True)
    out = DataConfig(
        name=_choice("data.name", _required("data", raw, "name", "mnist5k"), DATASETS),
        n_train=_int("data.n_train", _required("data", raw, "n_train", "4000"), minimum=1,
                     maximum=MAX_SAMPLES, why=_WHY_SAMPLES),
        n_test=_int("data.n_test", _required("data", raw, "n_test", "1000"), minimum=1,
                    maximum=MAX_SAMPLES, why=_WHY_SAMPLES),
        data_dir=None if data_dir is None else str(expand_user(data_dir, "data.data_dir")),
        seed=_int("data.seed", raw.get("seed", 0), minimum=0, maximum=MAX_SEED,
                  why="it seeds numpy's generator, as seeds seed torch's"),
        options=_data_options(raw.get("options"), raw.get("name", "mnist5k")),
        flatten=_bool("data.flatten", raw.get("flatten", True)),
    )
    size = BUNDLED_SIZES.get(out.name)
    if size is not None and out.n_train + out.n_test > size:
        raise ValueError(
            f"`data.n_train` + `data.n_test` must be <= {size} (the samples of {out.name}), got "
            f"{out.n_train} + {out.n_test} = {out.n_train + out.n_test}; lower data.n_train or "
            "data.n_test"
        )
    return out


def _training(raw: Any, widths: tuple[int, ...], n_train: int) -> TrainingConfig:
    raw = _mapping("training", raw, _field_names(TrainingConfig))
    alphas_raw = _required("training", raw, "alphas", "[0, -0.5, -1]")
    if not isinstance(alphas_raw, (list, tuple)) or not alphas_raw:
        raise _fail("training.alphas", alphas_raw, "a non-empty list of numbers, e.g. [0, -0.5, -1]")
    if len(alphas_raw) > MAX_ALPHAS:
        raise ValueError(f"`training.alphas` must list at most {MAX_ALPHAS:,} values, got "
                         f"{len(alphas_raw):,}; use fewer alphas")
    alphas = tuple(_float(f"training.alphas[{i}]", a) for i, a in enumerate(alphas_raw))
    _distinct_alphas(alphas)
    batch_size = _int("training.batch_size", _required("training", raw, "batch_size", "128"),
                      minimum=1)
    if batch_size > n_train:
        raise ValueError(f"`training.batch_size` must be <= data.n_train = {n_train}, got "
                         f"{batch_size}; lower it or use more training data")
    factor = raw.get("lr_factor", "1")
    if isinstance(factor, (int, float)) and not isinstance(factor, bool):
        factor = repr(factor)
    factor = _str("training.lr_factor", factor)
    assert factor is not None
    out = TrainingConfig(
        steps=_int("training.steps", _required("training", raw, "steps", "250"), minimum=1,
                   maximum=MAX_STEPS, why=_WHY_STEPS),
        batch_size=batch_size,
        lr0=_float("training.lr0", _required("training", raw, "lr0", "0.1"), positive=True),
        alphas=alphas,
        lr_factor=factor,
        loss=_choice("training.loss", raw.get("loss", "mse"), tuple(x.value for x in Loss)),
        dtype=_choice("training.dtype", raw.get("dtype", "float32"), DTYPES),
        full_batch=_bool("training.full_batch", raw.get("full_batch", False)),
    )
    factors = {}
    for w in widths:
        try:
            r = factors[w] = evaluate_expression(factor, w)
        except ValueError as err:
            raise ValueError(f"`training.lr_factor`: {err}; write an expression of n such as "
                             "'sqrt(n) / 32'") from None
        if not (math.isfinite(r) and r > 0):
            raise ValueError(f"`training.lr_factor` = {_quoted(factor)} must be finite and > 0 "
                             f"at every width, got {r} at n = {w}")
    for i, alpha in enumerate(alphas):
        for w in widths:
            try:  # lr_at(out, w, alpha), with r(w) evaluated once per width
                lr = out.lr0 * float(w) ** alpha * factors[w]
            except OverflowError:
                lr = math.inf
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError(
                    f"`training.alphas[{i}]` = {alpha:g} gives lr = lr0 · n^alpha · r(n) = {lr:g} "
                    f"at width n = {w} (lr0 = {out.lr0:g}); the learning rate must be finite and "
                    "> 0: use an alpha nearer 0, or change training.lr0 or training.lr_factor"
                )
    return out


def _logging(raw: Any, steps: int) -> LoggingConfig:
    raw = _mapping("logging", raw, _field_names(LoggingConfig))
    eval_every = raw.get("eval_every")
    out = LoggingConfig(
        every=_int("logging.every", raw.get("every", 10), minimum=1, maximum=MAX_STEPS,
                   why=f"training.steps is at most {MAX_STEPS}"),
        eval_every=None if eval_every is None else _int(
            "logging.eval_every", eval_every, minimum=1, maximum=MAX_STEPS,
            why=f"training.steps is at most {MAX_STEPS}"),
        probe_ntk=_bool("logging.probe_ntk", raw.get("probe_ntk", False)),
    )
    for key, every in (("every", out.every), ("eval_every", out.eval_every)):
        if every is not None and steps // every > MAX_LOG_ENTRIES:
            raise ValueError(
                f"`logging.{key}` = {every} with training.steps = {steps} keeps "
                f"{steps // every:,} log entries in every run record, more than "
                f"{MAX_LOG_ENTRIES:,} (they are held in memory and written to the record); "
                f"raise logging.{key} to at least {-(-steps // MAX_LOG_ENTRIES):,}"
            )
    return out


def _distinct_alphas(alphas: tuple[float, ...]) -> None:
    """Refuse repeated alphas and alphas within :data:`ALPHA_TOL` (relative for |α| > 1) of
    each other: the report groups those as one alpha, which would merge two grids silently."""
    order = sorted(range(len(alphas)), key=lambda i: alphas[i])
    for i, j in zip(order, order[1:]):
        a, b = alphas[i], alphas[j]
        if abs(a - b) <= ALPHA_TOL * max(1.0, abs(a), abs(b)):
            first, second = sorted((i, j))
            if a == b:
                raise _fail("training.alphas", list(alphas), "a list without repeated values")
            raise ValueError(
                f"`training.alphas` must not hold alphas within {ALPHA_TOL:g} of each other, got "
                f"alphas[{first}] = {alphas[first]!r} and alphas[{second}] = {alphas[second]!r}; "
                "the report would treat them as one alpha: give each alpha once"
            )


def _execution(raw: Any) -> ExecutionConfig:
    raw = _mapping("execution", raw, _field_names(ExecutionConfig))
    return ExecutionConfig(
        seed_batch=_int("execution.seed_batch", raw.get("seed_batch", 1), minimum=1,
                        maximum=MAX_SEED_BATCH,
                        why="seeds trained together stop gaining speed by about 8"),
        seed_batch_max_width=_int("execution.seed_batch_max_width",
                                  raw.get("seed_batch_max_width", 256), minimum=1,
                                  maximum=MAX_WIDTH),
    )


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def from_dict(raw: Any) -> SweepConfig:
    """Validate a raw mapping (as read from YAML) into a :class:`SweepConfig`.

    Raises:
        ValueError: naming the offending field by its dotted path; unknown keys list the
            valid ones.
    """
    raw = _mapping("", raw, _TOP_KEYS)
    for section in ("model", "data", "training", "seeds"):
        if section not in raw:
            raise ValueError(f"section `{section}` is missing; a config needs "
                             "model, data, training and seeds (see `weakcorr sweep demo`)")
    model = _model(raw["model"])
    data = _data(raw["data"])
    seeds = _seeds(raw["seeds"])
    # the grid's size before training's checks, which evaluate lr at every (width, alpha)
    alphas_raw = raw["training"].get("alphas") if isinstance(raw["training"], Mapping) else None
    n_alphas = len(alphas_raw) if isinstance(alphas_raw, (list, tuple)) else 1
    runs = len(model.widths) * n_alphas * len(seeds)
    if runs > MAX_RUNS:
        raise ValueError(f"the grid `model.widths` × `training.alphas` × `seeds` has "
                         f"{len(model.widths):,} × {n_alphas:,} × {len(seeds):,} = "
                         f"{runs:,} runs, more than {MAX_RUNS:,} (each is a record file); use "
                         "fewer widths, alphas or seeds")
    training = _training(raw["training"], model.widths, data.n_train)
    if training.loss == Loss.CROSS_ENTROPY and data.name == "teacher":
        raise ValueError("`training.loss` = 'cross_entropy' needs class targets, but `data.name` = "
                         "'teacher' has regression targets (not probability vectors: the loss can "
                         "be negative); use training.loss: mse with teacher, or a class dataset")
    return SweepConfig(
        model=model, data=data, training=training, seeds=seeds,
        logging=_logging(raw.get("logging") or {}, training.steps),
        execution=_execution(raw.get("execution") or {}),
        name=_str("name", raw.get("name", "sweep")) or "sweep",
        description=_str("description", raw.get("description", "")) or "",
    )


def to_dict(cfg: SweepConfig) -> dict[str, Any]:
    """A plain, JSON/YAML-safe mapping that :func:`from_dict` turns back into ``cfg``."""
    out = dataclasses.asdict(cfg)
    out["data"] = _data_dict(cfg.data)
    out["model"] = _model_dict(cfg.model)
    out["model"]["widths"] = list(cfg.model.widths)
    out["training"]["alphas"] = list(cfg.training.alphas)
    out["seeds"] = list(cfg.seeds)
    return out


# --------------------------------------------------------------------------- loading


def list_presets() -> list[str]:
    """Names of the presets shipped with the package (``paper-a2``, ``cpu``, ``demo``)."""
    root = importlib.resources.files("weakcorr") / "presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


_ConfigLoader = _inputs.ConfigLoader
_read_yaml = _inputs.read_yaml  # bounded: size, nesting, aliases, tags (weakcorr._inputs)


def load_raw(source: str | pathlib.Path) -> dict[str, Any]:
    """The raw mapping of a preset name or a YAML file (before validation).

    Raises:
        FileNotFoundError: if ``source`` is neither a preset nor an existing file.
    """
    path = pathlib.Path(source)
    if isinstance(source, str) and source in list_presets() and not path.exists():
        text = (importlib.resources.files("weakcorr") / "presets" / f"{source}.yaml").read_text()
        raw = _read_yaml(text, f"preset {source!r}")
    elif path.is_file():
        raw = _read_yaml(_inputs.read_config_text(path), str(path))
    else:
        raise FileNotFoundError(f"no config file {_inputs.clip(repr(str(source)))} and no preset "
                                f"of that name; presets: {', '.join(list_presets())}")
    if not isinstance(raw, dict):
        raise ValueError(f"{_inputs.clip(str(source))} must hold a YAML mapping, got "
                         f"{type(raw).__name__}")
    return raw


def _quoted(item: str) -> str:
    """A --set item for a message: its repr, at most ~80 characters."""
    return _inputs.clip(repr(item))


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"`--set` takes key=value (e.g. training.steps=50), got {_quoted(item)}")
    value = _read_yaml(text, f"the value in --set {_quoted(item)}") if text.strip() else None
    return key.strip().split("."), value


# Fields that are themselves mappings, so `--set` reaches their keys: the valid keys, an example.
_MAPPING_FIELDS: dict[tuple[str, ...], tuple[tuple[str, ...], str]] = {
    ("model", "widths"): (("start", "stop", "per_doubling"),
                          "{start: 64, stop: 1024, per_doubling: 4}"),
    ("seeds",): (("start", "count"), "{start: 0, count: 5}"),
}


def apply_overrides(raw: Mapping[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config.

    Sections take ``section.key=value``; the mappings ``model.widths`` ({start, stop,
    per_doubling}) and ``seeds`` ({start, count}) also take ``model.widths.stop=512`` and
    ``seeds.count=3`` where the config already writes them as mappings.

    >>> apply_overrides({"training": {"steps": 250}}, ["training.steps=20"])
    {'training': {'steps': 20}}
    """
    try:
        out = copy.deepcopy(dict(raw))
    except RecursionError:
        raise ValueError("the config nests mappings or lists too deep to copy; a config needs "
                         "3 levels") from None
    for item in overrides:
        keys, value = _parse_override(item)
        if len(keys) == 1:
            if keys[0] not in _TOP_KEYS:
                raise ValueError(f"unknown key `{_inputs.clip(keys[0])}` in --set "
                                 f"{_quoted(item)}; valid keys: {', '.join(_TOP_KEYS)}")
            out[keys[0]] = value
            continue
        *parents, key = keys
        if tuple(parents) in _MAPPING_FIELDS:
            _override_mapping_field(out, parents, key, value, item)
            continue
        section = keys[0]
        if section in ("name", "description"):
            raise ValueError(f"--set {_quoted(item)}: `{section}` has no sub-keys; "
                             f"write {section}=VALUE")
        if section not in _SECTIONS and section != "seeds":
            raise ValueError(f"unknown section `{_inputs.clip(section)}` in --set "
                             f"{_quoted(item)}; sections with sub-keys: {', '.join(_SECTIONS)}, "
                             "seeds")
        if section == "seeds" or len(keys) != 2:
            containers = {(s,) for s in _SECTIONS} | set(_MAPPING_FIELDS)
            depth = max(n for n in range(1, len(keys)) if tuple(keys[:n]) in containers)
            field_ = ".".join(keys[:depth + 1])
            raise ValueError(f"--set {_quoted(item)}: `{_inputs.clip(field_)}` has no sub-keys; "
                             f"write {_inputs.clip(field_)}=VALUE")
        node = out.get(section)
        if node is None:
            node = out[section] = {}
        if not isinstance(node, dict):
            raise ValueError(f"--set {_quoted(item)}: `{section}` is not a mapping in the config")
        node[key] = value
    return out


def _override_mapping_field(out: dict[str, Any], parents: list[str], key: str, value: Any,
                            item: str) -> None:
    """``--set model.widths.stop=512``: set one key of a field that is written as a mapping."""
    valid, example = _MAPPING_FIELDS[tuple(parents)]
    path = ".".join(parents)
    node: Any = out
    for i, name in enumerate(parents):
        if not isinstance(node, dict):
            raise ValueError(f"--set {_quoted(item)}: `{'.'.join(parents[:i])}` is not a mapping "
                             "in the config")
        if node.get(name) is None:
            node[name] = {}
        node = node[name]
    if not isinstance(node, dict):
        raise ValueError(
            f"--set {_quoted(item)}: `{path}` is {_describe(node)} in this config, not a mapping "
            f"with keys {', '.join(valid)}; set the whole mapping instead, e.g. "
            f"--set '{path}={example}'"
        )
    node[key] = value  # unknown keys are named (with the valid ones) by validation


def load(source: str | pathlib.Path | Mapping[str, Any], overrides: list[str] | tuple[str, ...] = ()
         ) -> SweepConfig:
    """Load and validate a sweep config from a preset name, a YAML file or a mapping.

    Args:
        source: ``"paper-a2"``, ``"cpu"``, ``"demo"``, a path to a YAML file, or a mapping.
        overrides: ``key.sub=value`` strings (``--set``), applied before validation.

    Returns:
        The validated :class:`SweepConfig`.

    Raises:
        ValueError: for any invalid field, naming it by its dotted path.
        FileNotFoundError: for a missing file that is not a preset name either.
    """
    raw = dict(source) if isinstance(source, Mapping) else load_raw(source)
    return from_dict(apply_overrides(raw, list(overrides)))


# --------------------------------------------------------------------------- grid expansion


def _data_dict(data_cfg: DataConfig) -> dict[str, Any]:
    """``data`` as a plain mapping; ``options`` only when set (older run ids stay the same)."""
    out = dataclasses.asdict(data_cfg)
    options = out.pop("options")
    if options:
        out["options"] = dict(options)
    if out["flatten"]:
        del out["flatten"]
    return out


def _model_dict(model_cfg: ModelConfig) -> dict[str, Any]:
    """``model`` as a plain mapping: the MLP's fields, or a factory's (older run ids stay the
    same: the factory fields are left out for the MLP)."""
    out = dataclasses.asdict(model_cfg)
    if model_cfg.factory is None:
        for k in _FACTORY_FIELDS:
            del out[k]
        return out
    return {"widths": out["widths"], "factory": model_cfg.factory,
            "kwargs": dict(model_cfg.kwargs), "source_sha256": model_cfg.source_sha256}


def run_config(cfg: SweepConfig, width: int, alpha: float, seed: int) -> dict[str, Any]:
    """The full, JSON-safe config of one run (what its id hashes)."""
    model = _model_dict(cfg.model)
    del model["widths"]
    training = dataclasses.asdict(cfg.training)
    del training["alphas"]
    training.update(alpha=float(alpha), lr=lr_at(cfg.training, width, alpha))
    return {
        "model": {"width": int(width), **model},
        "data": _data_dict(cfg.data),
        "training": training,
        "logging": dataclasses.asdict(cfg.logging),
        "seed": int(seed),
    }


def expand(cfg: SweepConfig) -> list[dict[str, Any]]:
    """All runs of the grid, ordered α, width, seed (one config dict per run).

    Each dict holds ``model`` (with ``width``), ``data``, ``training`` (with ``alpha`` and the
    resolved ``lr``), ``logging`` and ``seed``.
    """
    return [run_config(cfg, w, a, s)
            for a in cfg.training.alphas for w in cfg.model.widths for s in cfg.seeds]
