"""Hostile input through `weakcorr sweep` (issue 18): every case a one-line error naming the
field (or the file, or the --set item), exit code 2, and nothing written.

The cases that already passed before issue 18 (malformed YAML, wrong types, unknown keys,
missing or corrupt datasets, bad flags, ...) are in ``test_bad_input.py``; this file uses its
helpers and adds the inputs that were tracebacks, hangs or silent merges: parser denial of
service (size, nesting, aliases, tags, control characters, encodings), ``lr_factor``
expressions, absurd sizes, near-equal alphas, and IDX files that lie about their size. The
cases that would exhaust memory or recursion on code without the bounds run again in a
subprocess under a 2 GiB address-space limit (``resource.setrlimit``), so they cannot take the
machine down.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from weakcorr import _inputs, config

from .test_bad_input import BASE, _check, _sweep

MB = 1_000_000


def _yaml(**sections: object) -> str:
    """BASE with some sections replaced (None drops one), as YAML text."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for key, value in sections.items():
        if value is None:
            raw.pop(key)
        elif isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        else:
            raw[key] = value
    return yaml.safe_dump(raw, sort_keys=False)


def _laughs(levels: int = 9) -> str:
    """The "billion laughs": 9 levels of 9 aliases, 9^9 ≈ 3.9e8 strings from ~1 KB."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines)


LAUGHS_UNDER_SEEDS = _yaml(seeds=None) + "seeds: " + _laughs().replace("\n", "\n  ").replace(
    "a0: ", "\n  a0: ", 1)
DEEP_SEEDS = _yaml(seeds=None) + "seeds: " + "[" * 10_000 + "]" * 10_000 + "\n"
def _lr(expr: str) -> str:
    return _yaml(training={"lr_factor": expr})


# (id, config text or bytes, --set overrides, needles of the one error line)
CASES: list[tuple[str, str | bytes, list[str], list[str]]] = [
    # --- the YAML parser: size, characters, encodings, tags, nesting, aliases
    ("control-character-in-file", _yaml(name="a\x01b").replace("a\\x01b", "a\x01b"), [],
     ["config.yaml is not valid YAML", "unacceptable character #x0001"]),
    ("control-character-in-set", _yaml(), ["name=a\x07b"],
     ["the value in --set 'name=a\\x07b' is not valid YAML", "unacceptable character #x0007"]),
    ("non-utf8-file", _yaml().encode() + b"# caf\xe9\n", [],
     ["config.yaml is not UTF-8 text", "byte 0xe9", "save it as UTF-8"]),
    ("timestamp-tag", _yaml().replace("lr0: 0.1", "lr0: !!timestamp 0.1"), [],
     ["uses the tag `!!timestamp`", "remove the tag"]),
    ("python-tag", _yaml() + "description: !!python/object:os.system echo\n", [],
     ["uses the tag `!!python/object:os.system`"]),
    ("tag-in-set", _yaml(), ["training.lr0=!!float 0.1"], ["--set", "uses the tag"]),
    ("file-over-1mb", _yaml() + "#" * MB + "\n", [],
     ["config file", "config.yaml has 1,000,", "more than the 1,000,000"]),
    ("set-over-1mb", _yaml(), ["description=" + "x" * (MB + 1)],
     ["the value in --set 'description=xxxxxxxxxx", "...", "1,000,001 characters"]),
    ("deep-flow-lists", DEEP_SEEDS, [], ["nests lists or mappings more than 32 deep", "line"]),
    ("deep-set", _yaml(), ["seeds=" + "[" * 5000 + "]" * 5000], ["--set", "more than 32 deep"]),
    ("billion-laughs", LAUGHS_UNDER_SEEDS, [],
     ["has aliases (*name) that expand", "its 64 values to 490,329,100", "more than 10 times",
      "write the values out"]),
    ("laughs-4-levels", _yaml(seeds=None) + "seeds: " + _laughs(4).replace("\n", "\n  ").replace(
        "a0: ", "\n  a0: ", 1), [], ["has aliases (*name) that expand", "its 54 values to 8,343"]),
    ("self-alias", _yaml(seeds=None) + "seeds: &s [1, *s]\n", [],
     ["has an alias inside the node it refers to", "line"]),
    ("int-of-5000-digits", _yaml().replace("steps: 5", "steps: " + "9" * 5000), [],
     ["config.yaml holds a value that cannot be read", "4300 digits"]),
    ("repeated-key-long", _yaml() + ("k" * 500 + ": 1\n") * 2, [],
     ["has the key `kkkkkkkk", "...` twice"]),
    ("set-key-with-newline", _yaml(), ["mod\nel.width=1"],
     ["unknown section `mod\\nel`"]),
    ("unknown-key-long", _yaml(model={"w" * 5000: 1}), [],
     ["unknown key `model.wwwwww", "...` in `model`"]),
    # --- lr_factor expressions (paper Eq. 29 times r(n))
    ("lr-1000-unary-minus", _lr("-" * 999 + "n"), [],
     ["`training.lr_factor`", "999 operators, more than 100"]),
    ("lr-5000-terms", _lr("+".join(["n"] * 5000)), [],
     ["`training.lr_factor`", "9,999 characters, more than 1,000"]),
    ("lr-100000-chars", _lr("1" * 100_000), [],
     ["`training.lr_factor`", "100,000 characters, more than 1,000"]),
    ("lr-1000-parens", _lr("(" * 1000 + "n" + ")" * 1000), [],
     ["`training.lr_factor`", "2,001 characters"]),
    ("lr-30-parens", _lr("(" * 30 + "n" + ")" * 30), [],
     ["`training.lr_factor`", "nests parentheses 30 deep, more than 20"]),
    ("lr-150-operators", _lr("n" + "*1" * 150), [],
     ["`training.lr_factor`", "150 operators, more than 100"]),
    ("lr-call-of-import", _lr("__import__('os').system('x')"), [],
     ["`training.lr_factor`", "may use only numbers", "found `"]),
    ("lr-null-byte", _yaml(), ['training.lr_factor="n\\0"'],
     ["`training.lr_factor`", "cannot parse expression", "null bytes"]),
    ("lr-huge-power", _lr("n ** 1000"), [],
     ["`training.lr_factor`", "cannot be evaluated at n = 8", "Numerical result out of range"]),
    # --- sizes a config names (with the reason)
    ("depth-100000", _yaml(model={"depth": 100_000}), [],
     ["`model.depth` must be an integer <= 100", "got 100000", "Python step"]),
    ("width-stop-1e308", _yaml(model={"widths": {"start": 8, "stop": 1e308, "per_doubling": 1}}),
     [], ["`model.widths.stop` must be an integer <= 10000000", "31 GB"]),
    ("width-2e7", _yaml(), ["model.widths=[8, 20000000]"],
     ["`model.widths[1]` must be an integer <= 10000000"]),
    ("steps-1e12", _yaml(training={"steps": 10**12}), [],
     ["`training.steps` must be an integer <= 10000000", "take days"]),
    ("n-train-1e9", _yaml(data={"name": "teacher", "n_train": 10**9}), [],
     ["`data.n_train` must be an integer <= 10000000", "MNIST has 70,000"]),
    ("log-entries", _yaml(training={"steps": 5_000_000}, logging={"every": 1}), [],
     ["`logging.every` = 1 with training.steps = 5000000", "5,000,000 log entries",
      "raise logging.every to at least 5"]),
    ("alphas-merged", _yaml(training={"alphas": [0, 1e-12]}), [],
     ["`training.alphas` must not hold alphas within 1e-08", "alphas[1] = 1e-12"]),
    ("alphas-merged-relative", _yaml(training={"alphas": [-1000.0, -1000.000001]}), [],
     ["`training.alphas` must not hold alphas within 1e-08"]),
    ("runs-over-a-million", _yaml(seeds={"count": 100_000}, training={"alphas": [0, -0.5]}),
     ["model.widths=[8, 16, 32, 64, 128, 256]"],
     ["the grid `model.widths` × `training.alphas` × `seeds` has 6 × 2 × 100,000 = 1,200,000"]),
    ("huge-int-as-float", _yaml(training={"lr0": 10**400}), [],
     ["`training.lr0` must be a finite number > 0", "<an integer of 1329 bits>"]),
    ("seed-batch", _yaml(execution={"seed_batch": 10**6}), [],
     ["`execution.seed_batch` must be an integer <= 1024"]),
    ("teacher-of-80-gb", _yaml(data={"name": "teacher", "n_train": 10_000, "n_test": 16,
                                     "options": {"d_in": 1_000_000}}), [],
     ["`data.name` ('teacher')", "would draw 75.1 GiB in float64, more than 8 GiB"]),
]


# Cases that would exhaust memory without the bounds: only under the cap (subprocess, below).
CAPPED_ONLY = ("billion-laughs",)
DEFAULT_CASES = [c for c in CASES if c[0] not in CAPPED_ONLY]


@pytest.mark.parametrize("text,overrides,needles", [c[1:] for c in DEFAULT_CASES],
                         ids=[c[0] for c in DEFAULT_CASES])
def test_hostile_config(capsys, tmp_path, text, overrides, needles):
    path = tmp_path / "config.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    start = time.perf_counter()
    rc, out, err = _sweep(capsys, tmp_path, str(path), *[a for o in overrides for a in ("--set", o)])
    elapsed = time.perf_counter() - start
    _check(rc, out, err, *needles)
    assert len(err) < 700, err  # values quoted to ~80 characters
    assert elapsed < 5, elapsed  # refused up front, not after a long parse


def test_data_load_bounds_its_sizes():
    """The library call, without a config in front (same bound)."""
    from weakcorr import data

    with pytest.raises(ValueError, match=r"^`n_test` must be <= 10,000,000 .* got 10,000,001"):
        data.load("teacher", n_train=8, n_test=10_000_001)


def test_messages_quote_at_most_80_characters_of_a_value():
    with pytest.raises(ValueError) as info:
        config.evaluate_expression("sqrt(" + "n+" * 60 + "n", 4)
    quoted = str(info.value).split("expression ", 1)[1].split(": ", 1)[0]
    assert len(quoted) <= _inputs.QUOTE_CHARS + 3, quoted
    assert _inputs.clip("a\u2028b\x1b") == "a\\u2028b\\x1b"  # one line, escapes shown
    assert _inputs.describe(list(range(10**6))).startswith("[0, 1, 2, 3, ...] (list)")


def test_describe_is_bounded_on_a_billion_laughs_structure():
    """A structure of 10^9 leaves sharing references (what the YAML above constructs)."""
    leaf: list = ["lol"] * 10
    for _ in range(8):
        leaf = [leaf] * 10
    start = time.perf_counter()
    text = _inputs.describe(leaf)
    assert time.perf_counter() - start < 0.1
    assert len(text) < 100 and text.endswith("(list)")
    with pytest.raises(ValueError, match=r"^`seeds\[0\]` must be an integer >= 0, got \[\[\["):
        config.from_dict({**BASE, "seeds": leaf})


def test_valid_near_miss_inputs_are_accepted():
    """The bounds are not too tight (so the refusals above can fail): a 100-char expression,
    20 nested parentheses, 100 operators, nesting of 31, aliases used once, alphas 1e-6 apart."""
    ok = _yaml(training={"lr_factor": "(" * 19 + "sqrt(n) / 32" + ")" * 19,
                         "alphas": [0, 1e-6]})
    ok += "x-anchors: &w [8, 16]\n"
    raw = config._read_yaml(ok, "ok")
    raw.pop("x-anchors")
    cfg = config.from_dict(raw)
    assert cfg.training.alphas == (0.0, 1e-6)
    assert config.evaluate_expression("n" + "*1" * 99 + "+0", 3) == 3.0
    nested = "[" * 31 + "1" + "]" * 31
    assert config._read_yaml(f"a: {nested}", "ok") is not None
    alias_doc = "a: &a [1, 2, 3]\nb: [*a, *a, *a, *a]\n"
    assert config._read_yaml(alias_doc, "ok")["b"][3] == [1, 2, 3]


# --------------------------------------------------------------------------- IDX files


def _idx(dims: tuple[int, ...], body: bytes | None = None) -> bytes:
    head = b"\x00\x00\x08" + bytes([len(dims)]) + np.array(dims, ">u4").tobytes()
    return head + (bytes(int(np.prod(dims))) if body is None else body)


def _mnist(folder: pathlib.Path, *, images: bytes | None = None, gz_images: bool = False,
           n: int = 20) -> str:
    folder.mkdir(exist_ok=True)
    labels = _idx((n,), bytes(range(10)) * (n // 10))
    for split in ("train", "t10k"):
        img = images if images is not None else _idx((n, 28, 28))
        name = f"{split}-images-idx3-ubyte"
        if gz_images:
            (folder / (name + ".gz")).write_bytes(gzip.compress(img, compresslevel=1))
        else:
            (folder / name).write_bytes(img)
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(labels)
    return str(folder)


IDX_CASES = [
    ("5x5-images", dict(images=_idx((20, 5, 5))), ["holds 5x5 images", "28x28"]),
    ("0-rows", dict(images=_idx((0, 28, 28)), n=0), ["holds 0 images"]),
    ("header-implies-terabytes", dict(images=_idx((2**31, 28, 28), b"")),
     ["has a header (sizes [2147483648, 28, 28]) implying", "more than the 2,147,483,648"]),
    ("gzip-longer-than-header", dict(images=_idx((20, 28, 28)) + bytes(5 * MB), gz_images=True),
     ["is longer than its header (sizes [20, 28, 28]) implies (15,696 bytes, inflated)"]),
    ("gzip-truncated", dict(images=_idx((20, 28, 28))[:-100], gz_images=True),
     ["is shorter than its header"]),
    ("plain-oversized", dict(images=_idx((20, 28, 28)) + b"\0"),
     ["has 15697 bytes but its header (sizes [20, 28, 28]) implies 15696"]),
]


@pytest.mark.parametrize("kwargs,needles", [c[1:] for c in IDX_CASES], ids=[c[0] for c in IDX_CASES])
def test_hostile_idx(capsys, tmp_path, kwargs, needles):
    folder = _mnist(tmp_path / "mnist", **kwargs)
    path = tmp_path / "config.yaml"
    path.write_text(_yaml(data={"name": "mnist", "n_train": 16, "n_test": 16, "data_dir": folder}))
    _check(*_sweep(capsys, tmp_path, str(path)), "`data.data_dir`", *needles)


# --------------------------------------------------------------------------- under a memory cap

CAPPED = ["deep-flow-lists", "billion-laughs", "lr-1000-unary-minus", "lr-5000-terms",
          "lr-100000-chars", "lr-1000-parens", "depth-100000", "int-of-5000-digits"]
_CAP_BYTES = 2 * 2**30  # address space: `import torch` and the CLI need ~0.7 GB


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_CAP_BYTES, _CAP_BYTES))


@pytest.mark.slow
@pytest.mark.parametrize("case", CAPPED)
def test_capped_subprocess(tmp_path, case):
    """The real process (`python -m weakcorr`) under a 2 GiB address-space cap and a 60 s
    timeout: the recursion and memory cases end in one line and exit 2."""
    _, text, overrides, needles = next(c for c in CASES if c[0] == case)
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    cmd = [sys.executable, "-m", "weakcorr", "sweep", str(path), "--out", str(tmp_path / "out")]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          preexec_fn=_limit_memory, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weakcorr sweep: error: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_capped_gzip_bomb(tmp_path):
    """A gzip that inflates to 1 GiB (1 MB on disk) under a 2 GiB cap: refused after reading
    one byte past the header's size (it was a MemoryError traceback after 12 s)."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    header = _idx((20, 28, 28))
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as fh:
        fh.write(header)
        zeros = bytes(2**24)
        for _ in range(64):  # 1 GiB of zeros
            fh.write(zeros)
    _mnist(folder)  # labels and test files (plain)
    (folder / "train-images-idx3-ubyte").unlink()
    path = tmp_path / "config.yaml"
    path.write_text(_yaml(data={"name": "mnist", "n_train": 16, "n_test": 16,
                                "data_dir": str(folder)}))
    cmd = [sys.executable, "-m", "weakcorr", "sweep", str(path), "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          preexec_fn=_limit_memory)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is longer than its header" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- `weakcorr a1`

A1_BASE = {"model": {"widths": [8], "depths": [1], "activations": ["relu"]},
           "datasets": ["teacher"], "data": {"n_train": 8, "n_test": 4}}
A1_CASES = [
    ("control-character", yaml.safe_dump(A1_BASE) + "name: a\x01b\n", [],
     ["config.yaml is not valid YAML", "#x0001"]),
    ("tag", yaml.safe_dump(A1_BASE) + "name: !!timestamp 2001-12-14\n", [],
     ["uses the tag `!!timestamp`"]),
    ("deep", yaml.safe_dump(A1_BASE) + "description: " + "[" * 1000 + "]" * 1000 + "\n", [],
     ["more than 32 deep"]),
    ("depth-1000", yaml.safe_dump(A1_BASE), ["model.depths=[1, 1000]"],
     ["`model.depths[1]` must be an integer <= 100", "depths 1-3"]),
    ("non-utf8", yaml.safe_dump(A1_BASE).encode() + b"# \xff\n", [], ["is not UTF-8 text"]),
]


@pytest.mark.parametrize("text,overrides,needles", [c[1:] for c in A1_CASES],
                         ids=[c[0] for c in A1_CASES])
def test_hostile_a1_config(capsys, tmp_path, text, overrides, needles):
    from weakcorr import cli

    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out"
    rc = cli.main(["a1", str(path), "--out", str(out), "--quiet",
                   *[a for o in overrides for a in ("--set", o)]])
    captured = capsys.readouterr()
    assert not out.exists()
    assert rc == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weakcorr a1: error: "), captured.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("item", ["data.data_dir=~{", "data.data_dir=~no_such_user_x/mnist"])
def test_unknown_home_directory_is_a_clean_error(item):
    """pathlib's expanduser raises a bare RuntimeError for an unknown ~user (found by the
    20,000-case --set fuzz): a one-line error naming the field instead."""
    from weakcorr import config

    with pytest.raises(ValueError, match=r"`data.data_dir` is '~.*whose home directory"):
        config.load("demo", [item, "data.name=mnist"])
