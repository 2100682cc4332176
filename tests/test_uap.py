"""Universal adversarial perturbations: projection, DeepFool step, the stopping rule, and the per-model cache."""

from __future__ import annotations

import pytest
import torch

from bench.datasets import evalsets
from bench.datasets.evalsets import EvalContext
from bench.datasets.uap import deepfool, model_hash, project, universal_perturbation
from bench.errors import UsageError
from bench.methods import METHODS


@pytest.fixture(scope="module")
def msp(tiny, tiny_ctx):
    train, val, _ = tiny
    return METHODS.get("msp")(backbone="lenet", seed=0).fit(train, val, tiny_ctx)


def test_projection_onto_linf_and_l2_balls():
    v = torch.tensor([[3.0, -4.0]])
    assert torch.equal(project(v, 1.0, "inf"), torch.tensor([[1.0, -1.0]]))
    torch.testing.assert_close(project(v, 1.0, "2"), torch.tensor([[0.6, -0.8]]))
    torch.testing.assert_close(project(v, 10.0, "2"), v)  # inside the ball: unchanged


def test_deepfool_crosses_the_nearest_boundary(msp, mnist_test):
    model = msp.classifier.eval()
    x = mnist_test.images[:5].float() / 255
    for i in range(5):
        label = int(model(x[i : i + 1]).argmax())
        r = deepfool(model, x[i : i + 1], label, 10)
        assert int(model((x[i : i + 1] + r).clamp(0, 1)).argmax()) != label
        assert 0 < float(r.norm()) < 10


def test_universal_perturbation_respects_the_ball_and_fools(msp, mnist_train):
    model = msp.classifier.eval()
    x = mnist_train.images[:60].float() / 255
    v, stats = universal_perturbation(model, x, xi=0.3, p="inf", max_passes=2)
    assert v.shape == (1, 1, 28, 28) and float(v.abs().max()) <= 0.3 + 1e-6
    assert stats["uap_train_fooling_rate"] > 10
    assert 1 <= stats["uap_passes"] <= 2
    with torch.no_grad():
        fooled = (model((x + v).clamp(0, 1)).argmax(1) != model(x).argmax(1)).float().mean()
    assert stats["uap_train_fooling_rate"] == pytest.approx(100 * float(fooled))


def test_stops_at_the_target_fooling_rate(msp, mnist_train):
    model = msp.classifier.eval()
    x = mnist_train.images[:40].float() / 255
    _, stats = universal_perturbation(model, x, xi=8.0, p="2", delta=0.9, max_passes=5)
    assert stats["uap_train_fooling_rate"] >= 10 and stats["uap_passes"] == 1


def test_set_is_cached_per_model_and_reports_the_fooling_rate(msp, tmp_path, mnist_test):
    ctx = EvalContext(max_eval=50, cache_dir=tmp_path)
    name = "uap:xi=0.25,p=inf,n=30,passes=1"
    a = evalsets.build(name, ctx, msp)
    assert len(list((tmp_path / "uap").glob("*.pt"))) == 1
    b = evalsets.build(name, ctx, msp)
    assert torch.equal(a.images, b.images) and a.extra == b.extra  # the second build is a cache hit
    x = mnist_test.images[:50].float() / 255
    assert (a.images - x).abs().max() <= 0.25 + 1e-6
    assert (a.kind, a.shift, a.severity) == ("id", "uap", "inf:0.25")
    assert 0 <= a.extra["uap_fooling_rate"] <= 100 and a.extra["gen_seconds"] > 0
    other = METHODS.get("msp")(backbone="lenet", seed=1).load_state_dict(msp.state_dict())
    with torch.no_grad():
        other.model.fc2.bias.add_(0.01)
    assert model_hash(other.classifier) != model_hash(msp.classifier)
    evalsets.build(name, ctx, other)
    assert len(list((tmp_path / "uap").glob("*.pt"))) == 2


@pytest.mark.parametrize("bad", ["uap:p=inf", "uap:xi=0.2,p=1", "uap:xi=-1", "uap:xi=0.2,delta=2"])
def test_bad_parameters(bad):
    with pytest.raises(UsageError):
        evalsets.build(bad, EvalContext(max_eval=4), object())
