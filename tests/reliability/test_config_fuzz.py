"""Hypothesis fuzz of the config loader (issue 18): config files (text and raw bytes), ``--set``
values and ``lr_factor`` expressions. Whatever the input, loading either succeeds or raises the
library's clean error — a ``ValueError`` with a one-line message — never another exception.

The default run draws 300 examples (a quick check on every test run); the slow run draws
20,000 (the issue's "no traceback in 20,000 cases"; an earlier fuzz of 23,032 cases found
1,255 tracebacks before the bounds). The inputs mix YAML-looking token soup (anchors,
aliases, tags, flow collections, control characters), structured values (huge ints, NaN,
nesting, strings) placed at random fields of a valid config, and arithmetic-looking text.
"""

from __future__ import annotations

import os

import contextlib
import pathlib
import tempfile

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weakcorr import _a1, config

BASE = {
    "name": "fuzz",
    "model": {"widths": [8, 16], "depth": 2},
    "data": {"name": "teacher", "n_train": 32, "n_test": 16},
    "training": {"steps": 5, "batch_size": 16, "lr0": 0.1, "alphas": [0, -1]},
    "seeds": 1,
    "logging": {"every": 5},
}
FIELDS = [("name",), ("seeds",), ("description",)] + [
    (section, key) for section in ("model", "data", "training", "logging", "execution")
    for key in ("widths", "depth", "activation", "bias", "name", "n_train", "n_test", "seed",
                "data_dir", "options", "steps", "batch_size", "lr0", "alphas", "lr_factor",
                "dtype", "full_batch", "every", "eval_every", "seed_batch", "flatten")
]

TOKENS = ["{", "}", "[", "]", ": ", ":", "- ", ",", "\n", "  ", "&a ", "*a", "&b ", "*b", "<<: ",
          "!!timestamp ", "!!int ", "!!float ", "!!python/object:os.system ", "!!binary ", "! ",
          "? ", "'", '"', "#", "|", ">", "%YAML 1.1\n", "---\n", "...\n", "1e-3", ".nan", ".inf",
          "-.inf", "0x1F", "0o17", "1_000", "1:30", "2001-12-14", "~", "null", "yes", "no",
          "9" * 400, "9" * 5000, "model", "widths", "training", "lr_factor", "seeds", "data",
          "start", "stop", "per_doubling", "count", "depth", "alphas", "\x00", "\x07", "\x1b",
          "\u2028", "\ufeff", "\udcff", "é", "n", "sqrt(n)", "**", "(", ")"]
EXPR_ALPHABET = "n0123456789.+-*/() eqrtlogxsp_,[]'\"jJ\\\x00"

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["gelu", "relu", "mnist5k", "teacher", "float64", "sqrt(n)/32", "n**-1"]),
)
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
_soup = st.lists(st.sampled_from(TOKENS), max_size=30).map("".join)
_expressions = st.one_of(st.text(alphabet=EXPR_ALPHABET, max_size=60), st.text(max_size=30),
                         st.lists(st.sampled_from(["n", "sqrt(", "log(", "exp(", "(", ")", "+",
                                                   "-", "*", "/", "**", "2", "0.5", "1e308",
                                                   "32"]), max_size=25).map("".join))


def _with_value(path: tuple[str, ...], value: object) -> dict:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    if len(path) == 1:
        raw[path[0]] = value
    else:
        section = raw.setdefault(path[0], {})
        section[path[1]] = value
    return raw


def _dump(raw: object) -> str:
    try:
        return yaml.safe_dump(raw, allow_unicode=True)
    except (yaml.YAMLError, ValueError, OverflowError):
        return "model: {widths: [8]}\n"


_TMP = tempfile.TemporaryDirectory(prefix="weakcorr-fuzz-")
_FILE = pathlib.Path(_TMP.name) / "config.yaml"


def _clean(load, *args) -> None:
    """Call ``load``: success, or a ValueError whose message is one line; nothing else."""
    try:
        load(*args)
    except ValueError as err:
        message = str(err)
        assert message and len(message.splitlines()) == 1, repr(message)
        assert len(message) < 2000, len(message)


def _load_file(content: str | bytes) -> None:
    if isinstance(content, bytes):
        _FILE.write_bytes(content)
    else:
        _FILE.write_text(content, encoding="utf-8", errors="surrogatepass")
    _clean(config.load, _FILE)
    _clean(_a1.load_config, _FILE)


_file_inputs = st.one_of(
    _soup,
    st.text(max_size=200),
    st.binary(max_size=200),
    st.tuples(st.sampled_from(FIELDS), _values).map(lambda fv: _dump(_with_value(*fv))),
    st.tuples(st.sampled_from(FIELDS), _soup).map(
        lambda fv: _dump(_with_value(fv[0], "PLACEHOLDER")).replace("PLACEHOLDER", fv[1])),
)
_set_inputs = st.tuples(
    st.sampled_from([".".join(f) for f in FIELDS] + ["model.widths.stop", "seeds.count", "x.y.z",
                                                      "", "model.", "=", "seeds.start"])
    | st.text(max_size=12),
    _soup | st.text(max_size=40) | _values.map(lambda v: _dump(v).strip()),
).map(lambda kv: f"{kv[0]}={kv[1]}")


def _check_file(content: str | bytes) -> None:
    with contextlib.suppress(UnicodeEncodeError):  # lone surrogates cannot be written as UTF-8
        _load_file(content)


def _check_set(item: str) -> None:
    _clean(config.load, BASE, [item])
    _clean(_a1.load_config, {"model": {"widths": [8]}}, [item])


def _check_expression(expr: str) -> None:
    _clean(config.evaluate_expression, expr, 64)
    _clean(config.load, _with_value(("training", "lr_factor"), expr))


FAST = settings(max_examples=100, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
# The slow 20,000 cases are the same on every run (CI must not fail by the luck of the draw);
# WEAKCORR_FUZZ_RANDOM=1 draws new ones, to look for new failures (one found ~{ in data_dir).
SLOW = settings(max_examples=20_000 // 3 + 1, deadline=None, database=None,
                derandomize=os.environ.get("WEAKCORR_FUZZ_RANDOM") != "1",
                suppress_health_check=list(HealthCheck))


# 3 x 100 = 300 examples by default


@FAST
@given(_file_inputs)
def test_fuzz_config_files(content):
    _check_file(content)


@FAST
@given(_set_inputs)
def test_fuzz_set_values(item):
    _check_set(item)


@FAST
@given(_expressions)
def test_fuzz_lr_factor(expr):
    _check_expression(expr)


# 3 x 6,667 = 20,001 examples


@pytest.mark.slow
@SLOW
@given(_file_inputs)
def test_fuzz_config_files_20000(content):
    _check_file(content)


@pytest.mark.slow
@SLOW
@given(_set_inputs)
def test_fuzz_set_values_20000(item):
    _check_set(item)


@pytest.mark.slow
@SLOW
@given(_expressions)
def test_fuzz_lr_factor_20000(expr):
    _check_expression(expr)
