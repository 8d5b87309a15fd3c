"""weakcorr._factory: MODULE:FUNCTION / file.py:FUNCTION families, their checks and identity."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from weakcorr import _factory as F

FAMILIES = "tests.factory.families"


def test_module_spec_loads_and_builds_seeded_members():
    fam = F.load(f"{FAMILIES}:mlp", {"d_in": 5})
    assert fam.takes_seed and fam.kwargs == {"d_in": 5} and fam.source.endswith("families.py")
    a, b, c = (F.make(fam, 8, s) for s in (0, 0, 1))
    assert a[0].in_features == 5 and a[0].out_features == 8
    torch.testing.assert_close(a[0].weight, b[0].weight)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_unseeded_factory_is_seeded_by_the_library_and_the_rng_restored():
    fam = F.load(f"{FAMILIES}:unseeded")
    assert not fam.takes_seed
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b, c = (F.make(fam, 4, s) for s in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(a[0].weight, b[0].weight)
    assert not torch.equal(a[0].weight, c[0].weight)
    with torch.random.fork_rng(devices=[]):  # the reference: torch.manual_seed(seed) first
        torch.manual_seed(7)
        ref = nn.Sequential(nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10))
    torch.testing.assert_close(a[0].weight, ref[0].weight)


def test_path_spec_and_module_from_the_current_directory(tmp_path, monkeypatch):
    src = tmp_path / "my_models.py"
    src.write_text("import torch\ndef net(width):\n    return torch.nn.Linear(2, width)\n")
    assert F.make(F.load(f"{src}:net"), 3, 0).out_features == 3
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "my_models", raising=False)
    assert F.make(F.load("my_models:net"), 5, 0).out_features == 5


@pytest.mark.parametrize("spec,needle", [
    ("no_colon", "must be MODULE:FUNCTION or path/to/file.py:FUNCTION, got 'no_colon'"),
    ("a b:f", "must be MODULE:FUNCTION"),
    ("mod:", "must be MODULE:FUNCTION"),
    ("weakcorr_no_such_module_xyz:f", "no module named 'weakcorr_no_such_module_xyz' in the "
                                      "current directory"),
    ("missing/file.py:f", "no file 'missing/file.py'"),
    (f"{FAMILIES}:nope", "has no function 'nope'; its functions: cnn, mlp, not_a_module"),
], ids=["no-colon", "bad-module", "no-function-name", "unimportable", "no-file", "no-function"])
def test_unresolvable_specs_name_the_flag(spec, needle):
    with pytest.raises(ValueError) as err:
        F.load(spec, name="--model")
    msg = str(err.value)
    assert msg.startswith("`--model`") and needle in msg and "\n" not in msg


def test_module_failing_at_import_names_the_error(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(ValueError, match=r"^`model.factory`: importing .*broken.py' failed: "
                                         r"RuntimeError: boom at import; fix the module"):
        F.load(f"{bad}:f", name="model.factory")


@pytest.mark.parametrize("spec,kwargs,needle", [
    (f"{FAMILIES}:three_args", None, "cannot be called as make_model(width, seed) or "
                                     "make_model(width)"),
    (f"{FAMILIES}:mlp", {"depth": 3}, "with keyword arguments ['depth']"),
], ids=["three-required", "unknown-kwarg"])
def test_wrong_signature_is_refused_before_any_call(spec, kwargs, needle):
    with pytest.raises(TypeError) as err:
        F.load(spec, kwargs, name="--model")
    assert isinstance(err.value, ValueError)  # the CLI shows it as a one-line error
    assert str(err.value).startswith("`--model`") and needle in str(err.value)


def test_width_and_seed_cannot_be_kwargs():
    with pytest.raises(ValueError, match=r"`--model-kwargs` must not set \['seed'\]"):
        F.load(f"{FAMILIES}:mlp", {"seed": 1}, kwargs_name="--model-kwargs")


def test_non_module_return_is_refused():
    fam = F.load(f"{FAMILIES}:not_a_module")
    with pytest.raises(TypeError, match=r"must return an nn.Module, got dict at width 4"):
        F.make(fam, 4, 0)


def test_check_member_runs_the_model_on_the_data():
    fam = F.load(f"{FAMILIES}:mlp")  # d_in = 64
    F.check_member(fam, 4, 0, torch.randn(3, 64))
    with pytest.raises(ValueError, match=r"at width 4 fails on the data's inputs of shape \(5,\)"):
        F.check_member(fam, 4, 0, torch.randn(3, 5), name="`--model`")


@pytest.mark.parametrize("fn,takes_seed", [
    (lambda width, seed: None, True), (lambda width: None, False),
    (lambda width, seed=0: None, True), (lambda width, depth=2: None, False),
    (lambda *args: None, True),
], ids=["width-seed", "width", "seed-default", "other-default", "varargs"])
def test_seed_detection(fn, takes_seed):
    assert F.check_signature(fn) is takes_seed


def test_source_hash_changes_with_the_file(tmp_path):
    src = tmp_path / "fam.py"
    src.write_text("import torch\ndef f(width, seed):\n    return torch.nn.Linear(2, width)\n")
    before = F.identity(f"{src}:f", {"a": 1})
    assert before["factory"] == f"{src}:f" and before["kwargs"] == {"a": 1}
    assert before == F.identity(f"{src}:f", {"a": 1})
    src.write_text(src.read_text() + "# edited\n")
    after = F.identity(f"{src}:f", {"a": 1})
    assert after["source_sha256"] != before["source_sha256"]
    import hashlib

    assert after["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_parse_kwargs():
    out = F.parse_kwargs(["depth=2", "norm=layer", "p=[1, 2]", "on=true", "x=0.5", "s="])
    assert out == {"depth": 2, "norm": "layer", "p": [1, 2], "on": True, "x": 0.5, "s": ""}
    for bad, needle in (("depth", "takes KEY=VALUE items"), ("1a=2", "takes KEY=VALUE items")):
        with pytest.raises(ValueError, match=needle):
            F.parse_kwargs([bad])
    with pytest.raises(ValueError, match="sets 'a' twice"):
        F.parse_kwargs(["a=1", "a=2"])


def test_as_family_from_a_callable_and_from_a_family():
    fam = F.as_family(lambda width: nn.Linear(2, width))
    assert F.as_family(fam) is fam and isinstance(fam(3, 0), nn.Linear)
    with pytest.raises(TypeError, match="must be a function make_model"):
        F.as_family(42)


def test_as_family_from_a_spec_with_kwargs():
    fam = F.as_family(f"{FAMILIES}:mlp", {"d_in": 3})
    assert fam.spec == f"{FAMILIES}:mlp" and fam.takes_seed
    assert F.make(fam, 5, 0)[0].in_features == 3
    with pytest.raises(ValueError, match=r"^`make_model`: .* has no function 'nope'"):
        F.as_family(f"{FAMILIES}:nope")
