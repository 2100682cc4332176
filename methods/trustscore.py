"""Trust score (Jiang, Kim, Guan & Gupta, NeurIPS 2018), the k-NN baseline of ConfidNet's Table 1.

On the cached baseline classifier's penultimate features (``backbone.forward_features``, eval mode):
fit one nearest-neighbour index per class on the training features with their TRUE labels; for a test point
with predicted class c, d_c = distance to the ``neighbor``-th nearest training point of class c, and

    trust = min_{c' != pred} d_c' / (d_pred + min_dist).

As in the reference (google/TrustScore, vendored by valeoai/ConfidNet): ``neighbor`` = 2 (its ``query(X, k=2)``,
meant to skip the point itself when scoring training data, and kept for test data), k = 10 and alpha = 0 for
the optional density filter (alpha = 0 keeps every point, the setting ConfidNet reports), min_dist = 1e-12.
The reference uses KD-trees; we use scikit-learn's exact ``NearestNeighbors`` with ``algorithm="auto"``
(brute force in high dimension, where a KD-tree degrades to it anyway): same distances, much faster in 1000-d.

Cost: the training features are kept (float32, N x F: 54k x 1000 = 216 MB for the MLP, 28 MB for SmallConvNet)
in memory and in the checkpoint, since the index must be rebuilt on load; scoring is exact k-NN, O(N) per query.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from bench.datasets.mnist import ImageSet
from bench.errors import NotFittedError, UsageError
from bench.methods.core.base import ConfidenceMethod, FitContext, Training, register
from bench.methods.core.options import Options, option
from bench.methods.core.training import map_batches


@dataclass(frozen=True)
class TrustScoreConfig(Options):
    k: int = option(10, ge=1)  # neighbours of the density filter (reference default)
    alpha: float = option(0.0, ge=0, lt=1)  # fraction of lowest-density training points dropped per class (0 = none)
    neighbor: int = option(2, ge=1)  # which nearest neighbour's distance is used (reference: 2nd, query(X, k=2))
    min_dist: float = option(1e-12, gt=0)


def density_filter(x: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """Drop the alpha-fraction of points whose k-th neighbour (the point itself counted) is farthest."""
    if alpha <= 0 or len(x) <= k:
        return x
    radii = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)[0][:, -1]
    return x[radii <= np.percentile(radii, (1 - alpha) * 100)]


class TrustScorer:
    """Per-class k-NN indices over features; ``score(features, pred)`` -> trust scores (numpy)."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, num_classes: int, cfg: TrustScoreConfig):
        self.cfg = cfg
        self.index = []
        for c in range(num_classes):
            xc = density_filter(features[labels == c], cfg.k, cfg.alpha)
            if len(xc) < cfg.neighbor:
                raise UsageError(f"trustscore: class {c} has {len(xc)} training points, fewer than "
                                 f"trustscore.neighbor={cfg.neighbor}; use more training data or lower alpha")
            self.index.append(NearestNeighbors(n_neighbors=cfg.neighbor).fit(xc))

    def distances(self, x: np.ndarray) -> np.ndarray:
        """(N, C): distance to the ``neighbor``-th nearest training point of each class."""
        return np.stack([ix.kneighbors(x)[0][:, -1] for ix in self.index], axis=1)

    def score(self, x: np.ndarray, pred: np.ndarray) -> np.ndarray:
        d = self.distances(x)
        d_pred = d[np.arange(len(d)), pred]
        others = d.copy()
        others[np.arange(len(d)), pred] = np.inf
        return others.min(1) / (d_pred + self.cfg.min_dist)


@register("trustscore", "Trust score: k-NN distance ratio on penultimate features (Jiang et al. 2018)")
class TrustScore(ConfidenceMethod):
    Config = TrustScoreConfig
    training = Training.FROZEN_BASELINE
    grid_weight = 0.15  # scheduling hint, in baseline trainings: k-d trees on the cached baseline's features
    needs_features = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._features: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._scorer: TrustScorer | None = None

    def _fit(self, train: ImageSet, val: ImageSet, ctx: FitContext) -> None:
        super()._fit(train, val, ctx)
        model = self._fitted_model()
        features, labels = map_batches(lambda x: model.forward_features(x).float(), model, train, ctx.device)
        self._features = features.cpu().contiguous()
        self._labels = labels.cpu().long()
        self._build()

    def _build(self) -> None:
        assert self._features is not None and self._labels is not None
        self._scorer = TrustScorer(self._features.numpy(), self._labels.numpy(), self.num_classes, self.config)

    def _predict_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._scorer is None:
            raise NotFittedError("trustscore is not fitted; call fit() or load_state_dict() first")
        model = self._fitted_model()
        f = model.forward_features(x)
        probs = model.forward_head(f).softmax(1)
        pred = probs.argmax(1)
        trust = self._scorer.score(f.float().cpu().numpy(), pred.cpu().numpy())
        return probs, torch.from_numpy(trust).float().to(probs.device)

    def extra_state(self) -> dict[str, torch.Tensor]:
        if self._features is None or self._labels is None:
            raise NotFittedError("trustscore is not fitted; call fit() first")
        return {"features": self._features, "labels": self._labels}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self._features = state["features"].float().contiguous()
        self._labels = state["labels"].long()
        self._build()
