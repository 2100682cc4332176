"""Trust score on hand-placed 1-D features (distances checkable by eye), then on the real method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.errors import UsageError
from bench.methods import METHODS
from bench.methods.trustscore import TrustScoreConfig, TrustScorer, density_filter

# class 0 at 0 and 1, class 1 at 10 and 11 (one feature)
FEATS = np.array([[0.0], [1.0], [10.0], [11.0]])
LABELS = np.array([0, 0, 1, 1])


def test_second_neighbour_distance_ratio_by_hand():
    s = TrustScorer(FEATS, LABELS, 2, TrustScoreConfig())  # neighbor=2, as the reference's query(X, k=2)
    x = np.array([[0.5], [0.5], [9.0]])
    # x=0.5: 2nd-nearest of class 0 is at distance 0.5 (both 0 and 1 are 0.5 away); of class 1: 11 - 0.5 = 10.5
    # x=9:   2nd-nearest of class 0: 9 - 0 = 9;  of class 1: 11 - 9 = 2
    np.testing.assert_allclose(s.distances(x), [[0.5, 10.5], [0.5, 10.5], [9.0, 2.0]])
    trust = s.score(x, np.array([0, 1, 1]))
    np.testing.assert_allclose(trust, [10.5 / 0.5, 0.5 / 10.5, 9.0 / 2.0], rtol=1e-9)


def test_first_neighbour_and_three_classes():
    feats = np.array([[0.0], [1.0], [10.0], [11.0], [4.0], [5.0]])
    labels = np.array([0, 0, 1, 1, 2, 2])
    s = TrustScorer(feats, labels, 3, TrustScoreConfig(neighbor=1))
    # x=2, predicted 0: nearest of class 0 is 1 (d=1); other classes: 10 (d=8), 4 (d=2) -> closest other 2
    assert s.score(np.array([[2.0]]), np.array([0]))[0] == pytest.approx(2.0 / 1.0)


def test_density_filter_drops_the_isolated_point():
    x = np.array([[0.0], [0.1], [0.2], [0.3], [50.0]])
    kept = density_filter(x, k=2, alpha=0.2)  # drop the 20% (one point) whose 2nd neighbour is farthest
    np.testing.assert_array_equal(kept, x[:4])
    np.testing.assert_array_equal(density_filter(x, k=2, alpha=0.0), x)  # alpha = 0 keeps everything


def test_config_and_too_few_points_raise():
    with pytest.raises(UsageError, match="trustscore.alpha"):
        TrustScoreConfig(alpha=1.0)
    with pytest.raises(UsageError, match="class 1"):
        TrustScorer(np.array([[0.0], [1.0], [5.0]]), np.array([0, 0, 1]), 2, TrustScoreConfig())


def test_method_uses_penultimate_features_of_the_baseline(tiny, tiny_ctx):
    train, val, test = tiny
    m = METHODS.get("trustscore")(backbone="lenet").fit(train, val, tiny_ctx)
    msp = METHODS.get("msp")(backbone="lenet").fit(train, val, tiny_ctx)
    model = m.classifier.eval()
    with torch.inference_mode():
        f_train = model.forward_features(train.images.float() / 255)
        f_test = model.forward_features(test.images[:32].float() / 255)
    torch.testing.assert_close(m.extra_state()["features"], f_train)
    pred = m.predict(test.images[:32])
    torch.testing.assert_close(pred.probs, msp.predict(test.images[:32]).probs)  # the baseline's softmax
    ref = TrustScorer(f_train.numpy(), train.labels.numpy(), 10, m.config).score(
        f_test.numpy(), pred.probs.argmax(1).numpy())
    np.testing.assert_allclose(pred.confidence.numpy(), ref, rtol=1e-5)
