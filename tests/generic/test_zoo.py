"""weakcorr.zoo builders: shapes, seeding (same seed → same network, global RNG untouched),
scalar outputs, tied weights, bad arguments."""

from __future__ import annotations

import pytest
import torch

import weakcorr as wc
from weakcorr import zoo

CASES = {
    "cnn": (lambda **kw: zoo.cnn(4, image_size=8, **kw), torch.zeros(2, 1, 8, 8)),
    "resnet": (lambda **kw: zoo.resnet(4, blocks=1, **kw), torch.zeros(2, 1, 5, 5)),
    "transformer": (lambda **kw: zoo.transformer(4, d_in=3, seq_len=4, **kw), torch.zeros(2, 4, 3)),
    "vit": (lambda **kw: zoo.vit(4, image_size=8, patch=4, **kw), torch.zeros(2, 1, 8, 8)),
    "embedding_seq": (lambda **kw: zoo.embedding_seq(4, vocab=5, seq_len=4, tied=False, **kw),
                      torch.zeros(2, 4, dtype=torch.long)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_shapes_seeding_and_scalar_outputs(name):
    build, x = CASES[name]
    state = torch.random.get_rng_state()
    a, b, c = build(seed=3), build(seed=3), build(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    pa, pb, pc = (wc.functional(m).params for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)
    assert a(x).shape == (2, 10)
    scalar = build(seed=0, d_out=None)
    assert scalar(x).shape == (2,)
    fm = wc.functional(scalar)
    assert fm(fm.params, x).shape == (2, 1)  # [B] outputs are d_y = 1


def test_embedding_seq_ties_the_output_to_the_embedding():
    model = zoo.embedding_seq(4, 0, vocab=5, seq_len=3)
    assert model.head.weight is model.embed.weight
    assert "head.weight" not in wc.functional(model).params
    assert model(torch.zeros(2, 3, dtype=torch.long)).shape == (2, 5)


def test_resnet_batch_norm_stays_in_eval_mode():
    model = zoo.resnet(2, 0, blocks=1, norm="batch").train()
    assert model.training and not model.norm.training
    wc.functional(model)  # not refused


@pytest.mark.parametrize("call,match", [
    (lambda: zoo.cnn(0), r"`width` must be an integer >= 1, got 0"),
    (lambda: zoo.cnn(4, image_size=10), r"`image_size` must be divisible by 4"),
    (lambda: zoo.cnn(4, seed=-1), r"`seed` must be an integer >= 0"),
    (lambda: zoo.resnet(4, norm="instance"), r"`norm` must be one of \['group', 'layer', 'batch'\]"),
    (lambda: zoo.transformer(5, heads=2), r"`width` \(5\) must be divisible by `heads` \(2\)"),
    (lambda: zoo.vit(4, image_size=10, patch=4), r"`image_size` \(10\) must be divisible by `patch`"),
    (lambda: zoo.embedding_seq(4, vocab=1), r"`vocab` must be an integer >= 2"),
    (lambda: zoo.cnn(4, d_out=0), r"`d_out` must be an integer >= 1"),
], ids=["width", "image_size", "seed", "norm", "heads", "patch", "vocab", "d_out"])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_families_table():
    assert set(zoo.FAMILIES) == {"cnn", "resnet", "transformer", "vit", "embedding_seq"}
