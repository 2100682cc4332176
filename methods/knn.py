"""Deep nearest neighbours (Sun, Ming, Zhu & Li, ICML 2022), post-hoc on the baseline's penultimate features.

Features are normalised to unit length; the score is the Euclidean distance from a test point's normalised
features to the k-th nearest normalised training feature (the training split, all of it, as the paper does for
CIFAR-10). Implementation: pytorch-ood's ``KNN`` (``fit_features`` / ``predict_features``) with scikit-learn's
exact brute-force search (``algorithm="brute"``: distances by chunked matrix products, no index, no faiss), sign
flipped: confidence = -distance to the k-th neighbour.

k = 50, the paper's CIFAR-10 setting. ``sample`` = 1 keeps every training feature (exact, the CIFAR-10 setting);
below 1 it keeps that fraction, drawn uniformly without replacement with the method's seed: the paper's answer for
large banks (ImageNet: k = 1000 on a 1% sample). Cost: the kept features are held (float32, N x F: 54k x 50 =
10.8 MB for lenet) in memory and in the checkpoint; scoring is O(N F) per query, so ``sample`` scales it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch_ood.detector import KNN as _KNN

from bench.errors import UsageError
from bench.methods.core.base import register
from bench.methods.core.features import FeatureScorer
from bench.methods.core.options import Options, option


@dataclass(frozen=True)
class KNNConfig(Options):
    k: int = option(50, ge=1)  # Sun et al. 2022, CIFAR-10
    sample: float = option(1.0, gt=0.0, le=1.0)  # fraction of the training features kept; 1 = all (CIFAR-10)


def kept_count(n_train: int, sample: float) -> int:
    """How many training features ``sample`` keeps: at least one."""
    return max(1, round(n_train * sample))


@register("knn", "Post-hoc: distance to the k-th nearest normalised training feature (Sun et al. 2022; pytorch-ood)")
class KNN(FeatureScorer):
    Config = KNNConfig

    @classmethod
    def derived(cls, config, num_features, n_train):
        if config.k > n_train:
            raise UsageError(f"knn.k={config.k} is larger than the training split ({n_train} images); "
                             f"lower it, e.g. --set knn.k={min(50, n_train)}")
        kept = kept_count(n_train, config.sample)
        if config.k > kept:
            raise UsageError(f"knn.k={config.k} is larger than the {kept} training features knn.sample="
                             f"{config.sample} keeps of {n_train}; raise knn.sample or lower knn.k")
        return {"bank_used": kept}

    def fit_features(self, features, labels, state):
        kept = kept_count(len(features), self.config.sample)
        if kept < len(features):
            features = features[torch.randperm(len(features), generator=self.generator(0))[:kept]]
        return {"train_features": features}

    def _set_state(self, state):
        super()._set_state(state)
        feats = state["train_features"]
        # all training points are in-distribution: pytorch-ood only needs labels >= 0
        self._detector = _KNN(None, k=self.config.k, algorithm="brute").fit_features(
            feats, torch.zeros(len(feats), dtype=torch.long))

    def confidence(self, features, logits):
        return -self._detector.predict_features(features.cpu()).float()
