"""The contract every registered method must meet (scikit-learn's ``parametrize_with_checks`` manner).

A method that cannot meet a check declares it on its class as ``contract_xfail = {"check name": "why"}``; the
check is then a strict xfail, so it is noticed when it starts passing.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from bench.cache import CheckpointCache
from bench.errors import NotFittedError
from bench.methods import METHODS
from bench.methods.base import ConfidenceMethod, FitContext

NAMES = METHODS.names()


def make(name: str, seed: int = 0) -> ConfidenceMethod:
    return METHODS.get(name)(backbone="lenet", seed=seed)


@pytest.fixture(scope="module")
def ctx_for(tiny_ctx, tmp_path_factory):
    """The fit context of a method. Methods that declare ``contract_cached_baseline`` (the post-hoc detectors) only
    read the plain baseline, whose training the msp checks cover: they share one cached baseline per seed, which
    keeps the suite's fits few."""
    shared = dataclasses.replace(tiny_ctx, cache=CheckpointCache(tmp_path_factory.mktemp("baselines")))

    def get(name: str) -> FitContext:
        return shared if METHODS.get(name).contract_cached_baseline else tiny_ctx

    return get


@pytest.fixture(scope="module")
def fitted(tiny, ctx_for):
    cache: dict[tuple[str, int], ConfidenceMethod] = {}

    def get(name: str, seed: int = 0) -> ConfidenceMethod:
        if (name, seed) not in cache:
            train, val, _ = tiny
            m = make(name, seed)
            assert m.fit(train, val, ctx_for(name)) is m, f"{name}.fit must return self"
            cache[(name, seed)] = m
        return cache[(name, seed)]

    return get


def xfail_if_declared(request: pytest.FixtureRequest, name: str, check: str) -> None:
    """A check the method declares it cannot meet becomes a strict xfail: the test still runs to the end, and
    fails (XPASS strict) the day the method starts meeting it."""
    reason = getattr(METHODS.get(name), "contract_xfail", {}).get(check)
    if reason:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_config_is_frozen_dataclass_with_defaults(name):
    cfg_cls = METHODS.get(name).Config
    assert dataclasses.is_dataclass(cfg_cls)
    cfg = cfg_cls()  # every field has a default
    if dataclasses.fields(cfg):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, dataclasses.fields(cfg)[0].name, None)


@pytest.mark.parametrize("name", NAMES)
def test_construct_stores_config_only_and_predict_before_fit_raises(name, tiny):
    m = make(name)
    assert m.model is None
    with pytest.raises(NotFittedError):
        m.predict(tiny[2].images)
    with pytest.raises(NotFittedError):
        _ = m.classifier


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_outputs_are_valid(name, fitted, tiny, request):
    xfail_if_declared(request, name, "outputs")
    m = fitted(name)
    x, y = tiny[2].images, tiny[2].labels
    pred = m.predict(x)
    assert pred.probs.shape == (len(x), 10) and pred.confidence.shape == (len(x),)
    assert torch.isfinite(pred.probs).all() and torch.isfinite(pred.confidence).all()
    assert (pred.probs >= 0).all() and torch.allclose(pred.probs.sum(1), torch.ones(len(x)), atol=1e-4)
    correct = pred.probs.argmax(1) == y
    assert correct.float().mean() > 0.5, "a tiny fit should already beat chance by far"


@pytest.mark.parametrize("name", NAMES)
def test_confidence_direction(name, fitted, tiny, request):
    """Higher = more trustworthy: correct predictions get more confidence than errors, on average, and noise gets
    less than digits."""
    xfail_if_declared(request, name, "direction")
    m = fitted(name)
    x, y = tiny[2].images, tiny[2].labels
    pred = m.predict(x)
    correct = pred.probs.argmax(1) == y
    assert 0 < correct.sum() < len(y), "the check needs both correct and wrong predictions"
    assert pred.confidence[correct].mean() > pred.confidence[~correct].mean()


@pytest.mark.parametrize("name", NAMES)
def test_seeded_determinism(name, fitted, tiny, ctx_for, request):
    xfail_if_declared(request, name, "determinism")
    train, val, test = tiny
    a = fitted(name).predict(test.images)
    b = make(name).fit(train, val, ctx_for(name)).predict(test.images)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.confidence, b.confidence)
    c = fitted(name, seed=1).predict(test.images)
    assert not torch.equal(a.probs, c.probs), "a different seed should give a different model"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", [True, False])
def test_predict_restores_mode(name, fitted, tiny, mode):
    m = fitted(name)
    m.classifier.train(mode)
    before = [mod.training for mod in m.classifier.modules()]
    m.predict(tiny[2].images[:8])
    assert [mod.training for mod in m.classifier.modules()] == before
    m.classifier.eval()


@pytest.mark.parametrize("name", NAMES)
def test_predict_does_not_mutate_inputs(name, fitted, tiny):
    m = fitted(name)
    x8 = tiny[2].images[:16].clone()
    xf = x8.float() / 255
    keep8, keepf = x8.clone(), xf.clone()
    p8, pf = m.predict(x8), m.predict(xf)
    assert torch.equal(x8, keep8) and torch.equal(xf, keepf)
    torch.testing.assert_close(p8.probs, pf.probs)  # uint8 input means the same as [0, 1] floats


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(name, fitted, tiny):
    m = fitted(name)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    clone = make(name).load_state_dict(torch.load(buf, weights_only=False))
    a, b = m.predict(tiny[2].images), clone.predict(tiny[2].images)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.confidence, b.confidence)


@pytest.mark.parametrize("name", NAMES)
def test_classifier_is_differentiable(name, fitted, tiny):
    m = fitted(name)
    x = (tiny[2].images[:4].float() / 255).requires_grad_(True)
    m.classifier.eval()
    m.classifier(x).logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS.get(n).posthoc and not METHODS.get(n).uses_features])
def test_posthoc_scores_equal_direct_predict(name, fitted, tiny):
    m = fitted(name)
    x = tiny[2].images.float() / 255
    with torch.inference_mode():
        logits = m.classifier.eval()(x)
    a, b = m.predict(x), m.predict_from_logits(logits)
    torch.testing.assert_close(a.probs, b.probs)
    torch.testing.assert_close(a.confidence, b.confidence)


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS.get(n).uses_features])
def test_feature_scores_equal_direct_predict(name, fitted, tiny):
    """What the runner does (one shared features + logits pass per eval set) gives what predict gives."""
    m = fitted(name)
    x = tiny[2].images
    a, b = m.predict(x), m.predict_from_features(*m.features(x))
    torch.testing.assert_close(a.probs, b.probs)
    torch.testing.assert_close(a.confidence, b.confidence)
