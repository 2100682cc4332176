"""Post-hoc scorers on hand-made logits: every expected value below is worked out by hand in the comments."""

from __future__ import annotations

import math

import pytest
import torch

from bench.errors import UsageError
from bench.methods import METHODS
from bench.methods.temperature import fit_temperature

LN3 = math.log(3.0)
# row 0: logits (0, 0) -> softmax (1/2, 1/2);  row 1: logits (ln 3, 0) -> softmax (3/4, 1/4)
LOGITS = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
SOFTMAX = torch.tensor([[0.5, 0.5], [0.75, 0.25]])


def score(name: str, **cfg) -> tuple[torch.Tensor, torch.Tensor]:
    cls = METHODS.get(name)
    return cls(cls.Config(**cfg)).score_logits(LOGITS)


def test_energy_is_logsumexp():
    probs, conf = score("energy")
    torch.testing.assert_close(probs, SOFTMAX)
    # log(e^0 + e^0) = ln 2;  log(3 + 1) = ln 4
    torch.testing.assert_close(conf, torch.tensor([math.log(2.0), math.log(4.0)]))


def test_energy_with_temperature():
    _, conf = score("energy", temperature=2.0)
    # 2 * log(e^0 + e^0) = 2 ln 2;  2 * log(e^(ln3 / 2) + 1) = 2 ln(sqrt(3) + 1)
    torch.testing.assert_close(conf, torch.tensor([2 * math.log(2.0), 2 * math.log(math.sqrt(3.0) + 1)]))
    with pytest.raises(UsageError, match="energy.temperature"):
        METHODS.get("energy").Config(temperature=0.0)


def test_maxlogit():
    probs, conf = score("maxlogit")
    torch.testing.assert_close(probs, SOFTMAX)
    torch.testing.assert_close(conf, torch.tensor([0.0, LN3]))


def test_entropy_is_negative_entropy():
    probs, conf = score("entropy")
    torch.testing.assert_close(probs, SOFTMAX)
    # -H(1/2, 1/2) = -ln 2;  -H(3/4, 1/4) = 3/4 ln 3/4 + 1/4 ln 1/4
    expected = torch.tensor([-math.log(2.0), 0.75 * math.log(0.75) + 0.25 * math.log(0.25)])
    torch.testing.assert_close(conf, expected)


def test_entropy_finite_on_saturated_logits():
    _, conf = METHODS.get("entropy")().score_logits(torch.tensor([[1000.0, 0.0, -1000.0]]))
    assert torch.isfinite(conf).all() and conf.item() == pytest.approx(0.0, abs=1e-6)


def test_fit_temperature_recovers_hand_computed_optimum():
    # logits (2, 0) for 4 samples, true class 0 three times and 1 once: the NLL is minimal where
    # softmax(2 / T)[0] = 3/4, i.e. 2 / T = ln 3, T = 2 / ln 3 = 1.8205
    logits = torch.tensor([[2.0, 0.0]] * 4)
    labels = torch.tensor([0, 0, 0, 1])
    assert fit_temperature(logits, labels) == pytest.approx(2.0 / LN3, rel=1e-5)
    # an under-confident model gets T < 1: logits (0.5, 0), right 9 times in 10 -> 0.5 / T = ln 9, T = 0.2276
    labels = torch.tensor([0] * 9 + [1])
    assert fit_temperature(torch.tensor([[0.5, 0.0]] * 10), labels) == pytest.approx(0.5 / math.log(9.0), rel=1e-5)


def test_temperature_scores_with_fitted_t():
    m = METHODS.get("temperature")()
    m.load_extra_state({"temperature": 2.0})
    probs, conf = m.score_logits(LOGITS)
    # logits / 2 = (ln 3 / 2, 0) -> softmax (sqrt3 / (sqrt3 + 1), 1 / (sqrt3 + 1)) = (0.6340, 0.3660)
    r = math.sqrt(3.0) / (math.sqrt(3.0) + 1)
    torch.testing.assert_close(probs, torch.tensor([[0.5, 0.5], [r, 1 - r]]))
    torch.testing.assert_close(conf, torch.tensor([0.5, r]))
    assert m.extra_state() == {"temperature": 2.0}


def test_temperature_fit_on_tiny(tiny, tiny_ctx):
    train, val, _ = tiny
    m = METHODS.get("temperature")(backbone="lenet").fit(train, val, tiny_ctx)
    assert 0.05 < m.temperature < 20.0
    assert m.train_log.extra["temperature"] == [m.temperature]
    msp = METHODS.get("msp")(backbone="lenet").fit(train, val, tiny_ctx)
    x = tiny[2].images
    # scaling by T > 0 never changes the argmax
    assert torch.equal(m.predict(x).probs.argmax(1), msp.predict(x).probs.argmax(1))
