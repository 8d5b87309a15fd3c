"""Model families from a factory: ``make_model(width, seed) -> nn.Module`` or ``make_model(width)``.

A family is named on the command line or in a sweep YAML as ``MODULE:FUNCTION`` (``MODULE``
importable from the current directory or ``PYTHONPATH``, e.g. ``my_models:cnn``) or
``path/to/file.py:FUNCTION``. :func:`load` imports it and checks its signature before any work;
:func:`make` builds one member, seeding it when the factory takes no seed (``torch.manual_seed``
inside ``torch.random.fork_rng``, so the caller's RNG is untouched) and refusing anything but an
``nn.Module``. :func:`identity` is what a run id hashes: the spec, the keyword arguments and the
sha256 of the factory's source file, so an edited factory is a new protocol.

Every error is one line naming the flag or field (``name``), what was received and the fix.

>>> fam = Family(lambda width, seed: torch.nn.Linear(3, width), spec="<lambda>")
>>> make(fam, 4, seed=0).out_features
4
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import os
import pathlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._files import expand_user

__all__ = ["Family", "FactoryTypeError", "as_family", "check_kwargs", "check_member",
           "check_signature", "identity", "load", "make", "parse_kwargs", "parse_spec",
           "source_sha256"]


class FactoryTypeError(TypeError, ValueError):
    """A factory of the wrong signature or return type: a TypeError, and a ValueError so that the
    command line shows it as its one-line error."""


_EXAMPLE = "e.g. my_models:cnn (my_models.py in the current directory) or path/to/models.py:cnn"


@dataclasses.dataclass(frozen=True)
class Family:
    """A model factory with its keyword arguments.

    Attributes:
        fn: the factory; called as ``fn(width, seed, **kwargs)`` or ``fn(width, **kwargs)``.
        spec: where it came from (``"MODULE:FUNCTION"``, a path spec, or a qualified name).
        kwargs: extra keyword arguments passed at every call.
        takes_seed: whether ``fn`` takes the seed (else the library seeds torch's RNG).
        source: the factory's source file, when known.
    """

    fn: Callable[..., Any]
    spec: str = ""
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    takes_seed: bool | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.takes_seed is None:
            object.__setattr__(self, "takes_seed", _takes_seed(self.fn))

    def __call__(self, width: int, seed: int) -> nn.Module:
        return make(self, width, seed)


def _takes_seed(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes the seed: two required positional parameters, a second positional
    one named ``seed``, or ``*args`` (True when it cannot be inspected)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in pos if p.default is inspect.Parameter.empty]
    return len(required) >= 2 or (len(pos) >= 2 and pos[1].name == "seed")


def check_signature(fn: Callable[..., Any], kwargs: Mapping[str, Any] | None = None, *,
                    name: str = "make_model", spec: str | None = None) -> bool:
    """Check ``fn`` can be called as ``fn(width, seed, **kwargs)`` or ``fn(width, **kwargs)``.

    Returns:
        Whether it takes the seed (:func:`make` seeds torch's RNG for it otherwise).

    Raises:
        TypeError: naming ``name``, the signature found and the fix.
    """
    shown = spec or getattr(fn, "__qualname__", repr(fn))
    if not callable(fn):
        raise FactoryTypeError(f"`{name}` must be a function make_model(width, seed) -> "
                               f"nn.Module, got {type(fn).__name__} {shown!r}")
    kw = dict(kwargs or {})
    takes_seed = _takes_seed(fn)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return takes_seed
    try:
        sig.bind(*((64, 0) if takes_seed else (64,)), **kw)
    except TypeError as err:
        extra = f" with keyword arguments {sorted(kw)}" if kw else ""
        raise FactoryTypeError(
            f"`{name}` {shown!r} has the signature {sig}, which cannot be called as "
            f"make_model(width, seed) or make_model(width){extra} ({err}); define it as "
            "def make_model(width, seed, ...) -> nn.Module, or (width, ...) and let weakcorr "
            "seed it") from None
    return takes_seed


def parse_spec(spec: str, *, name: str = "--model") -> tuple[str, str]:
    """Split ``"MODULE:FUNCTION"`` or ``"path/to/file.py:FUNCTION"`` into its two parts.

    Raises:
        ValueError: not of that form, naming ``name``.
    """
    if not isinstance(spec, str):
        raise ValueError(f"`{name}` must be a string MODULE:FUNCTION, got "
                         f"{type(spec).__name__} {spec!r}; {_EXAMPLE}")
    where, sep, func = spec.strip().rpartition(":")
    if not sep or not where or not func.isidentifier() or (
            not where.endswith(".py") and not all(p.isidentifier() for p in where.split("."))):
        raise ValueError(f"`{name}` must be MODULE:FUNCTION or path/to/file.py:FUNCTION, got "
                         f"{spec!r}; {_EXAMPLE}")
    return where, func


def _source_path(where: str, *, name: str) -> pathlib.Path | None:
    """The source file of a module or path spec, without executing the module (None: unknown)."""
    if where.endswith(".py"):
        path = expand_user(where, name)
        if not path.is_file():
            raise ValueError(f"`{name}`: no file {where!r} (relative to the current directory "
                             f"{os.getcwd()!r}); give an existing .py file, {_EXAMPLE}")
        return path.resolve()
    with _cwd_on_path():
        try:
            found = importlib.util.find_spec(where)
        except (ImportError, ValueError) as err:
            raise ValueError(f"`{name}`: cannot find module {where!r} ({err}); it must be "
                             "importable from the current directory or PYTHONPATH, "
                             f"{_EXAMPLE}") from None
    if found is None:
        raise ValueError(f"`{name}`: no module named {where!r} in the current directory "
                         f"({os.getcwd()!r}) or on PYTHONPATH; {_EXAMPLE}")
    origin = found.origin
    return pathlib.Path(origin) if origin and os.path.isfile(origin) else None


class _cwd_on_path:
    """Put the current directory first on ``sys.path`` while importing (console scripts lack it)."""

    def __enter__(self) -> None:
        self.added = os.getcwd() not in sys.path and "" not in sys.path
        if self.added:
            sys.path.insert(0, os.getcwd())

    def __exit__(self, *exc: object) -> None:
        if self.added:
            try:
                sys.path.remove(os.getcwd())
            except ValueError:
                pass


def source_sha256(spec: str, *, name: str = "--model") -> str | None:
    """sha256 of the factory's source file (None for built-in or compiled modules).

    The module is located, not imported (:func:`importlib.util.find_spec`).
    """
    where, _ = parse_spec(spec, name=name)
    path = _source_path(where, name=name)
    if path is None:
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(spec: str, kwargs: Mapping[str, Any] | None = None, *, name: str = "--model",
         kwargs_name: str = "--model-kwargs") -> Family:
    """Import the factory ``spec`` and check its signature (with ``kwargs``) before any work.

    Args:
        spec: ``"MODULE:FUNCTION"`` or ``"path/to/file.py:FUNCTION"``.
        kwargs: keyword arguments for every call.
        name: the flag or field named in errors (``--model``, ``model.factory``).
        kwargs_name: the flag or field of ``kwargs`` named in errors.

    Returns:
        A :class:`Family`.

    Raises:
        ValueError: unparsable spec, module not found or failing to import, no such function.
        TypeError: a signature that cannot take (width, seed) or (width) with ``kwargs``.
    """
    kw = check_kwargs(kwargs, kwargs_name)
    where, func = parse_spec(spec, name=name)
    path = _source_path(where, name=name)
    try:
        with _cwd_on_path():
            if where.endswith(".py"):
                assert path is not None
                mod_name = "weakcorr_factory_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
                module = sys.modules.get(mod_name)
                if module is None or getattr(module, "__file__", None) != str(path):
                    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
                    assert loader_spec is not None and loader_spec.loader is not None
                    module = importlib.util.module_from_spec(loader_spec)
                    sys.modules[mod_name] = module
                    try:
                        loader_spec.loader.exec_module(module)
                    except BaseException:
                        sys.modules.pop(mod_name, None)
                        raise
            else:
                module = importlib.import_module(where)
    except Exception as err:  # noqa: BLE001 - the user's module failed to import
        raise ValueError(f"`{name}`: importing {where!r} failed: {type(err).__name__}: {err}; "
                         "fix the module (try `python -c \"import ...\"`)") from None
    fn = getattr(module, func, None)
    if fn is None:
        public = sorted(k for k, v in vars(module).items()
                        if callable(v) and not k.startswith("_") and not isinstance(v, type))
        raise ValueError(f"`{name}`: {where!r} has no function {func!r}; its functions: "
                         f"{', '.join(public[:12]) or 'none'}")
    takes_seed = check_signature(fn, kw, name=name, spec=spec)
    return Family(fn, spec=spec, kwargs=kw, takes_seed=takes_seed,
                  source=None if path is None else str(path))


def check_kwargs(kwargs: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping) or not all(
            isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise ValueError(f"`{name}` must be a mapping of keyword names to values, got "
                         f"{kwargs!r}; e.g. {{'depth': 2}}")
    bad = [k for k in kwargs if k in ("width", "seed")]
    if bad:
        raise ValueError(f"`{name}` must not set {bad}: the width and the seed are passed by "
                         "weakcorr; remove them")
    return dict(kwargs)


def parse_kwargs(items: Sequence[str] | None, *, name: str = "--model-kwargs") -> dict[str, Any]:
    """``["depth=2", "norm=layer", "p=[1, 2]"]`` → ``{"depth": 2, "norm": "layer", "p": [1, 2]}``.

    Values are read as YAML scalars or flow collections (numbers, booleans, null, lists), else
    kept as strings.

    Raises:
        ValueError: an item without ``=`` or with a bad key, naming ``name``.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"`{name}` takes KEY=VALUE items with KEY a Python identifier, got "
                             f"{item!r}; e.g. {name} depth=2 norm=layer")
        if key in out:
            raise ValueError(f"`{name}` sets {key!r} twice; give each key once")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
        if isinstance(out[key], (dict, set)) or hasattr(out[key], "isoformat"):
            out[key] = value  # mappings and YAML dates stay the text typed
    return check_kwargs(out, name)


def as_family(make_model: Family | str | Callable[..., Any],
              kwargs: Mapping[str, Any] | None = None, *, name: str = "make_model") -> Family:
    """A :class:`Family` from a Family, a ``"MODULE:FUNCTION"`` spec or a callable, checked."""
    if isinstance(make_model, Family):
        if kwargs:
            make_model = dataclasses.replace(make_model, kwargs={**make_model.kwargs, **kwargs})
        check_signature(make_model.fn, make_model.kwargs, name=name, spec=make_model.spec)
        return make_model
    if isinstance(make_model, str):
        return load(make_model, kwargs, name=name, kwargs_name="kwargs")
    kw = check_kwargs(kwargs, "kwargs")
    takes_seed = check_signature(make_model, kw, name=name)
    return Family(make_model, spec=getattr(make_model, "__qualname__", repr(make_model)),
                  kwargs=kw, takes_seed=takes_seed)


def make(family: Family, width: int, seed: int, *, name: str | None = None) -> nn.Module:
    """Build the family's member at ``width`` for ``seed``.

    A factory without a seed parameter is called after ``torch.manual_seed(seed)`` inside
    ``torch.random.fork_rng`` (the global RNG is restored afterwards).

    Raises:
        TypeError: the factory returned something other than an ``nn.Module``.
    """
    label = name or (f"`{family.spec}`" if family.spec else "`make_model`")
    if family.takes_seed:
        model = family.fn(width, seed, **family.kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = family.fn(width, **family.kwargs)
    if not isinstance(model, nn.Module):
        raise FactoryTypeError(
            f"{label} must return an nn.Module, got {type(model).__name__} at width {width}; "
            "return the model itself (e.g. nn.Sequential(...)), not a tuple, function or state "
            "dict")
    return model


def identity(spec: str, kwargs: Mapping[str, Any] | None = None, *,
             name: str = "model.factory") -> dict[str, Any]:
    """What a run id hashes of a family: spec, kwargs and the source file's sha256."""
    return {"factory": spec, "kwargs": dict(kwargs or {}),
            "source_sha256": source_sha256(spec, name=name)}


def check_member(family: Family, width: int, seed: int, x: torch.Tensor, *,
                 name: str = "`make_model`") -> nn.Module:
    """Build the member at ``width`` and run it on two inputs (through
    :func:`weakcorr.functional`), so that a factory returning no
    ``nn.Module``, or a model that cannot take the data, fails before any work.

    Returns:
        The model built.

    Raises:
        TypeError: no ``nn.Module`` returned.
        ValueError: the model fails on ``x[:2]`` (the message gives the input shape).
    """
    from .functional import functional  # refuses random / batch-dependent modules first

    model = make(family, width, seed, name=name)
    fm = functional(model)
    xb = x[:2].to(device=fm.device, dtype=fm.dtype if x.is_floating_point() else x.dtype)
    try:
        with torch.no_grad():
            fm(fm.params, xb)
    except Exception as err:  # noqa: BLE001 - the user's model failed on the data
        msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
        label = name if family.spec in name else f"{name} ({family.spec})"
        raise ValueError(f"{label} at width {width} fails on the data's inputs of "
                         f"shape {tuple(x.shape[1:])} ({x.dtype}): {type(err).__name__}: {msg}; "
                         "match the model's input to the dataset") from None
    return model


def build(model_cfg: Mapping[str, Any], seed: int, *, name: str = "model.factory") -> nn.Module:
    """The member of a run config's family: ``model_cfg`` holds ``factory``, ``kwargs``,
    ``source_sha256`` and ``width`` (sweep and A.1 run configs).

    Raises:
        ValueError: the factory's source no longer has the hash in the run config (it was
            edited after the sweep was configured: the run would not be the run its id names),
            or any error of :func:`load`.
        TypeError: what :func:`make` raises.
    """
    spec = model_cfg["factory"]
    now = source_sha256(spec, name=name)
    if now != model_cfg.get("source_sha256"):
        raise ValueError(f"the source of `{name}` {spec!r} changed since the sweep was "
                         f"configured (sha256 {str(model_cfg.get('source_sha256'))[:12]}... -> "
                         f"{str(now)[:12]}...); an edited factory is a new protocol: start a new "
                         "sweep (new --out)")
    family = load(spec, model_cfg.get("kwargs") or {}, name=name,
                  kwargs_name=name.rpartition(".")[0] + ".kwargs" if "." in name else "kwargs")
    return make(family, int(model_cfg["width"]), seed, name=f"`{name}` {spec!r}")


FACTORY_FIELDS = ("factory", "kwargs", "source_sha256")


def config_fields(model: Mapping[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """A config's ``model: {factory, kwargs, widths[, source_sha256]}`` section (sweep and A.1
    configs alike), checked: ``(spec, kwargs, source sha256)``. The module is located and its
    source hashed, not imported (the commands import and check it before any run).

    Raises:
        ValueError: a built-in MLP field beside ``model.factory``, a bad spec or kwargs, or a
            ``model.source_sha256`` the source no longer hashes to (an edited factory).
    """
    mlp = [k for k in model if k not in ("widths", *FACTORY_FIELDS)]
    if mlp:
        raise ValueError(f"`model.{mlp[0]}` sets the built-in MLP, but `model.factory` gives the "
                         f"family; remove {', '.join('model.' + k for k in mlp)} (options of your "
                         "family go in model.kwargs)")
    spec = model["factory"]
    parse_spec(spec, name="model.factory")
    kwargs = check_kwargs(model.get("kwargs") or {}, "model.kwargs")
    sha = source_sha256(spec, name="model.factory")
    given = model.get("source_sha256")
    if given is not None and given != sha:
        raise ValueError(f"`model.source_sha256` is {str(given)[:12]!r}... but the source of "
                         f"model.factory {spec!r} now hashes to {str(sha)[:12]!r}...: the factory "
                         "was edited, which is a new protocol; remove model.source_sha256 and "
                         "use a new --out")
    return spec, kwargs, sha


def check_cli_flags(args: Any) -> None:
    """``--model`` against the built-in MLP's flags (``diagnose``, ``correlations``): one family
    or the other, ``--model-kwargs`` only with ``--model``.

    Raises:
        ValueError: naming the flag and the fix.
    """
    mlp_flags = [f"--{n}" for n in ("depth", "activation", "parameterization")
                 if getattr(args, n) is not None]
    if args.model is not None and mlp_flags:
        raise ValueError(f"`{mlp_flags[0]}` sets the built-in MLP, but `--model` {args.model!r} "
                         f"gives the family; drop {' '.join(mlp_flags)} (pass options of your "
                         "family with --model-kwargs)")
    if args.model is None and args.model_kwargs:
        raise ValueError("`--model-kwargs` needs `--model` (they are passed to your factory); "
                         "add --model MODULE:FUNCTION or drop --model-kwargs")
