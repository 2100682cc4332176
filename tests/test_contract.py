"""The contract every registered method must meet (scikit-learn's ``parametrize_with_checks`` manner).

Each check is a function of one method's name, its fits and the tiny data; ``run_contract`` runs all of them for one
method (tests/test_adding_a_method.py runs the example of docs/adding-a-method.md through it). A method that cannot
meet a check declares it on its class as ``contract_xfail = {"check name": "why"}``; the check is then a strict
xfail, so it is noticed when it starts passing.

Fits share the session's checkpoint cache (``cached_tiny_ctx``), so the baselines most methods read train once per
seed; that the baseline's own training is seeded is checked once, for real, by ``test_baseline_training_is_seeded``.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Callable

import pytest
import torch

from bench.errors import NotFittedError
from bench.methods import METHODS
from bench.methods.core.base import ConfidenceMethod, FitContext
from bench.methods.core.options import Options

pytestmark = pytest.mark.contract  # the shared contract suite (tier: see tests/conftest.py)

NAMES = METHODS.names()


def make(name: str, seed: int = 0) -> ConfidenceMethod:
    return METHODS.get(name)(backbone="lenet", seed=seed)


class Fits:
    """The methods fitted on the tiny slices with ``ctx``, by (name, seed), each fitted once."""

    def __init__(self, tiny, ctx: FitContext):
        self.tiny, self.ctx = tiny, ctx
        self._done: dict[tuple[str, int], ConfidenceMethod] = {}

    def __call__(self, name: str, seed: int = 0) -> ConfidenceMethod:
        if (name, seed) not in self._done:
            self._done[(name, seed)] = self.fit(name, seed)
        return self._done[(name, seed)]

    def fit(self, name: str, seed: int = 0) -> ConfidenceMethod:
        """A fresh fit (not the one kept)."""
        train, val, _ = self.tiny
        m = make(name, seed)
        assert m.fit(train, val, self.ctx) is m, f"{name}.fit must return self"
        return m


@pytest.fixture(scope="module")
def fitted(tiny, cached_tiny_ctx) -> Fits:
    return Fits(tiny, cached_tiny_ctx)


# --- the checks ---------------------------------------------------------------------------------------------------
def check_config(name: str, fitted: Fits, tiny) -> None:
    cfg_cls = METHODS.get(name).Config
    assert dataclasses.is_dataclass(cfg_cls)
    cfg = cfg_cls()  # every field has a default
    if dataclasses.fields(cfg):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cfg, dataclasses.fields(cfg)[0].name, None)
        assert isinstance(cfg, Options), "options declare their ranges (methods/core/options.py), checked in one place"


def check_construct(name: str, fitted: Fits, tiny) -> None:
    """Construction stores the config only; predict before fit raises."""
    m = make(name)
    assert m.model is None
    with pytest.raises(NotFittedError):
        m.predict(tiny[2].images)
    with pytest.raises(NotFittedError):
        _ = m.classifier


def check_outputs(name: str, fitted: Fits, tiny) -> None:
    m = fitted(name)
    x, y = tiny[2].images, tiny[2].labels
    pred = m.predict(x)
    assert pred.probs.shape == (len(x), 10) and pred.confidence.shape == (len(x),)
    assert torch.isfinite(pred.probs).all() and torch.isfinite(pred.confidence).all()
    assert (pred.probs >= 0).all() and torch.allclose(pred.probs.sum(1), torch.ones(len(x)), atol=1e-4)
    correct = pred.probs.argmax(1) == y
    assert correct.float().mean() > 0.5, "a tiny fit should already beat chance by far"


def check_direction(name: str, fitted: Fits, tiny) -> None:
    """Higher = more trustworthy: correct predictions get more confidence than errors, on average."""
    m = fitted(name)
    x, y = tiny[2].images, tiny[2].labels
    pred = m.predict(x)
    correct = pred.probs.argmax(1) == y
    assert 0 < correct.sum() < len(y), "the check needs both correct and wrong predictions"
    assert pred.confidence[correct].mean() > pred.confidence[~correct].mean()


def check_determinism(name: str, fitted: Fits, tiny) -> None:
    test = tiny[2]
    a = fitted(name).predict(test.images)
    b = fitted.fit(name).predict(test.images)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.confidence, b.confidence)
    c = fitted(name, seed=1).predict(test.images)
    assert not torch.equal(a.probs, c.probs), "a different seed should give a different model"


def check_predict_restores_mode(name: str, fitted: Fits, tiny) -> None:
    m = fitted(name)
    for mode in (True, False):
        m.classifier.train(mode)
        before = [mod.training for mod in m.classifier.modules()]
        m.predict(tiny[2].images[:8])
        assert [mod.training for mod in m.classifier.modules()] == before
    m.classifier.eval()


def check_inputs_not_mutated(name: str, fitted: Fits, tiny) -> None:
    m = fitted(name)
    x8 = tiny[2].images[:16].clone()
    xf = x8.float() / 255
    keep8, keepf = x8.clone(), xf.clone()
    p8, pf = m.predict(x8), m.predict(xf)
    assert torch.equal(x8, keep8) and torch.equal(xf, keepf)
    torch.testing.assert_close(p8.probs, pf.probs)  # uint8 input means the same as [0, 1] floats


def check_checkpoint_round_trip(name: str, fitted: Fits, tiny) -> None:
    m = fitted(name)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    clone = make(name).load_state_dict(torch.load(buf, weights_only=True))
    a, b = m.predict(tiny[2].images), clone.predict(tiny[2].images)
    assert torch.equal(a.probs, b.probs) and torch.equal(a.confidence, b.confidence)


def check_classifier_is_differentiable(name: str, fitted: Fits, tiny) -> None:
    m = fitted(name)
    x = (tiny[2].images[:4].float() / 255).requires_grad_(True)
    m.classifier.eval()
    m.classifier(x).logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def check_logit_scores_equal_predict(name: str, fitted: Fits, tiny) -> None:
    """What the runner does for post-hoc scorers (one shared logits pass per eval set) gives what predict gives."""
    m = fitted(name)
    x = tiny[2].images.float() / 255
    logits = m.logits(x)  # channels-last on a CPU: within float noise of the classifier's default-layout forward
    with torch.inference_mode():
        torch.testing.assert_close(logits, m.classifier.eval()(x), atol=1e-5, rtol=1e-5)
    a, b = m.predict(x), m.predict_from_logits(logits)
    torch.testing.assert_close(a.probs, b.probs)
    torch.testing.assert_close(a.confidence, b.confidence)


def check_feature_scores_equal_predict(name: str, fitted: Fits, tiny) -> None:
    """What the runner does for feature scorers (one shared features + logits pass) gives what predict gives."""
    m = fitted(name)
    x = tiny[2].images
    a, b = m.predict(x), m.predict_from_features(*m.features(x))
    torch.testing.assert_close(a.probs, b.probs)
    torch.testing.assert_close(a.confidence, b.confidence)


def check_predict_logits_are_the_classifiers(name: str, fitted: Fits, tiny) -> None:
    """The logits predict hands back (what a run stores per cell) are the classifier's; only methods with an
    inference of their own (their own ``_predict_batch``) hand back none, and the runner then asks ``logits``."""
    from bench.methods.core.base import ConfidenceMethod

    m = fitted(name)
    x = tiny[2].images
    p = m.predict(x)
    assert (p.logits is None) == (type(m)._predict_batch is not ConfidenceMethod._predict_batch)
    if p.logits is not None:
        torch.testing.assert_close(p.logits, m.logits(x))


Check = Callable[[str, Fits, tuple], None]
#: check name -> (check, which method classes it applies to)
CHECKS: dict[str, tuple[Check, Callable[[type], bool]]] = {
    "config": (check_config, lambda cls: True),
    "construct": (check_construct, lambda cls: True),
    "outputs": (check_outputs, lambda cls: True),
    "direction": (check_direction, lambda cls: True),
    "determinism": (check_determinism, lambda cls: True),
    "restores_mode": (check_predict_restores_mode, lambda cls: True),
    "inputs_not_mutated": (check_inputs_not_mutated, lambda cls: True),
    "round_trip": (check_checkpoint_round_trip, lambda cls: True),
    "differentiable": (check_classifier_is_differentiable, lambda cls: True),
    "predict_logits": (check_predict_logits_are_the_classifiers, lambda cls: True),
    "shared_logits": (check_logit_scores_equal_predict, lambda cls: cls.posthoc and not cls.uses_features),
    "shared_features": (check_feature_scores_equal_predict, lambda cls: cls.uses_features),
}


def checks_for(name: str) -> list[str]:
    return [c for c, (_, applies) in CHECKS.items() if applies(METHODS.get(name))]


def run_contract(name: str, tiny, ctx: FitContext) -> Fits:
    """Every check that applies to method ``name`` (none may be declared as expected to fail); returns the fits."""
    fits = Fits(tiny, ctx)
    for check in checks_for(name):
        CHECKS[check][0](name, fits, tiny)
    return fits


def xfail_if_declared(request: pytest.FixtureRequest, name: str, check: str) -> None:
    """A check the method declares it cannot meet becomes a strict xfail: the test still runs to the end, and
    fails (XPASS strict) the day the method starts meeting it."""
    reason = METHODS.get(name).contract_xfail.get(check)
    if reason:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))


@pytest.mark.parametrize("name, check", [(n, c) for n in NAMES for c in checks_for(n)])
def test_contract(name, check, fitted, tiny, request):
    xfail_if_declared(request, name, check)
    CHECKS[check][0](name, fitted, tiny)


def test_baseline_training_is_seeded(fitted, tiny, tiny_ctx):
    """The session cache lets the checks above reuse baselines; here one trains again, uncached, and must give the
    very weights msp's cached fit has."""
    train, val, _ = tiny
    cached = fitted("msp").classifier.state_dict()
    fresh, _, _ = tiny_ctx.train_baseline("lenet", 10, 0, train, val)
    assert tiny_ctx.cache is None and cached.keys() == fresh.state_dict().keys()
    assert all(torch.equal(cached[k], v) for k, v in fresh.state_dict().items())


def test_a_declared_xfail_is_strict(monkeypatch):
    """The mechanism itself: a declared check gets a strict xfail marker (XPASS fails the run), others none."""
    class Request:
        def __init__(self):
            self.markers: list = []

        def applymarker(self, marker) -> None:
            self.markers.append(marker)

    monkeypatch.setattr(METHODS.get("msp"), "contract_xfail", {"direction": "why not"})
    declared, other = Request(), Request()
    xfail_if_declared(declared, "msp", "direction")
    xfail_if_declared(other, "msp", "outputs")
    [marker] = declared.markers
    assert marker.name == "xfail" and marker.kwargs == {"reason": "why not", "strict": True}
    assert other.markers == []
