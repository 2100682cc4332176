"""Expectation over transformation: equal to the deterministic attack with one sample and dropout off; gradients
run through dropout; the mean is over independent draws; the eval sets and their bad-input errors."""

from __future__ import annotations

import pytest
import torch
import torchattacks

from bench.datasets import evalsets
from bench.datasets.eot import dropout_on, eot_fgsm, eot_grad, eot_pgd
from bench.datasets.evalsets import EvalContext
from bench.errors import UsageError
from bench.methods import METHODS


@pytest.fixture(scope="module")
def fitted(tiny, tiny_ctx):
    train, val, _ = tiny
    msp = METHODS.get("msp")(backbone="lenet", seed=0).fit(train, val, tiny_ctx)
    mc = METHODS.get("mcdropout")(METHODS.get("mcdropout").Config(passes=3), backbone="lenet", seed=0)
    return msp, mc.load_state_dict(msp.state_dict())


@pytest.fixture(scope="module")
def batch(mnist_test):
    return mnist_test.images[:32].float() / 255, mnist_test.labels[:32]


def test_one_sample_dropout_off_equals_torchattacks_fgsm_and_pgd(fitted, batch):
    model = fitted[0].classifier.eval()
    x, y = batch
    assert torch.equal(eot_fgsm(model, x, y, 0.1, samples=1), torchattacks.FGSM(model, eps=0.1)(x, y))
    torch.manual_seed(5)
    ours = eot_pgd(model, x, y, 0.1, 0.025, 5, samples=1)
    torch.manual_seed(5)
    theirs = torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=5, random_start=True)(x, y)
    assert torch.equal(ours, theirs)


def test_gradients_run_through_dropout(fitted, batch):
    model = fitted[0].classifier.eval()
    x, y = batch
    det = eot_grad(model, x, y, 1)
    with dropout_on(model):
        assert not model.training and model.drop.training and model.conv2_drop.training
        torch.manual_seed(0)
        g1 = eot_grad(model, x, y, 1)
        g2 = eot_grad(model, x, y, 1)
        torch.manual_seed(0)
        mean2 = eot_grad(model, x, y, 2)
    assert not model.drop.training  # modes restored
    # each draw gives another gradient, none of them the deterministic one
    assert not torch.allclose(g1, g2) and not torch.allclose(g1, det)
    # EOT with two samples is the mean of the two draws that follow the same seed
    torch.testing.assert_close(mean2, (g1 + g2) / 2)


def test_eot_sets_attack_stochastic_methods_only(fitted, tmp_path):
    msp, mc = fitted
    ctx = EvalContext(max_eval=40, cache_dir=tmp_path)
    det = evalsets.build("fgsm:eps=0.2", ctx, mc)
    eot = evalsets.build("fgsm:eps=0.2,eot=4", ctx, mc)
    assert (det.shift, eot.shift, eot.severity) == ("fgsm", "fgsm-eot", "0.2")
    assert eot.extra["eot_samples"] == 4 and not torch.equal(det.images, eot.images)
    assert torch.equal(eot.images, evalsets.build("fgsm:eps=0.2,eot=4", ctx, mc).images)  # seeded masks
    # msp is deterministic: its expectation is itself, so eot= gives the deterministic images
    plain = evalsets.build("fgsm:eps=0.2,eot=4", ctx, msp)
    assert torch.equal(plain.images, det.images) and plain.extra["eot_samples"] == 1
    pgd = evalsets.build("pgd:eps=0.1,steps=2,eot=2", ctx, mc)
    assert pgd.shift == "pgd-eot" and (pgd.images - det.images.new_tensor(0)).isfinite().all()


@pytest.mark.parametrize("bad", ["fgsm:eps=0.1,eot=0", "pgd:eps=0.1,eot=-2", "pgd:eps=0.1,steps=0",
                                 "fgsm:eps=3"])
def test_bad_eot_parameters_fail_at_expansion(bad):
    with pytest.raises(UsageError, match=bad.split(":")[0]):
        evalsets.expand([bad])
