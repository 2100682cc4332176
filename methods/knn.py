"""Deep nearest neighbours (Sun, Ming, Zhu & Li, ICML 2022), post-hoc on the baseline's penultimate features.

Features are normalised to unit length; the score is the Euclidean distance from a test point's normalised
features to the k-th nearest normalised training feature (the training split, all of it, as the paper does for
CIFAR-10). Implementation: pytorch-ood's ``KNN`` (``fit_features`` / ``predict_features``) with scikit-learn's
exact brute-force search (``algorithm="brute"``: distances by chunked matrix products, no index, no faiss), sign
flipped: confidence = -distance to the k-th neighbour.

k = 50, the paper's CIFAR-10 setting (its ImageNet setting, k = 1000 on a 1% sample, is for 1.2M images).
Cost: the training features are kept (float32, N x F: 54k x 50 = 10.8 MB for lenet) in memory and in the
checkpoint; scoring is O(N F) per query.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch_ood.detector import KNN as _KNN

from bench.errors import UsageError
from bench.methods.base import register
from bench.methods.options import Options, option
from bench.methods.features import FeatureScorer


@dataclass(frozen=True)
class KNNConfig(Options):
    section = "knn"
    k: int = option(50, ge=1)  # Sun et al. 2022, CIFAR-10


@register("knn", "Post-hoc: distance to the k-th nearest normalised training feature (Sun et al. 2022; pytorch-ood)")
class KNN(FeatureScorer):
    Config = KNNConfig

    @classmethod
    def derived(cls, config, num_features, n_train):
        if config.k > n_train:
            raise UsageError(f"knn.k={config.k} is larger than the training split ({n_train} images); "
                             f"lower it, e.g. --set knn.k={min(50, n_train)}")
        return {}

    def fit_features(self, features, labels, state):
        return {"train_features": features}

    def _set_state(self, state):
        super()._set_state(state)
        feats = state["train_features"]
        # all training points are in-distribution: pytorch-ood only needs labels >= 0
        self._detector = _KNN(None, k=self.config.k, algorithm="brute").fit_features(
            feats, torch.zeros(len(feats), dtype=torch.long))

    def confidence(self, features, logits):
        return -self._detector.predict_features(features.cpu()).float()
