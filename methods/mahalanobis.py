"""Mahalanobis detector (Lee, Lee, Lee & Shin, NeurIPS 2018), post-hoc on the baseline's penultimate features.

Class-conditional Gaussians with a tied covariance, fitted once on the training split's features (true labels):
class means mu_k and one covariance shared by the classes. Implementation: pytorch-ood's ``Mahalanobis``
(``fit_features`` / ``predict_features``), sign flipped:

    confidence = max_k  -1/2 (f - mu_k)^T S^-1 (f - mu_k),   S = sum_k sum_{i in k} (f_i - mu_k)(f_i - mu_k)^T + 1e-6 I

pytorch-ood's S is the within-class *scatter* matrix (N times the paper's covariance), so its score is the paper's
squared distance divided by 2N: the same ranking, other units. The paper's input pre-processing and its
feature-layer ensemble (a logistic regression fitted on OOD validation data) are left out, as OpenOOD's ``mds``
does: they need OOD data or tuning, which a post-hoc baseline must not. No hyper-parameters.
"""

from __future__ import annotations

import torch
from pytorch_ood.detector import Mahalanobis as _Mahalanobis

from bench.methods.core.base import register
from bench.methods.core.features import FeatureScorer


def fitted_mahalanobis(state: dict[str, torch.Tensor]) -> _Mahalanobis:
    d = _Mahalanobis(None)
    d.mu, d.precision = state["mu"], state["precision"]
    return d


@register("mahalanobis", "Post-hoc: min Mahalanobis distance to class means, tied covariance, on penultimate "
          "features (Lee et al. 2018; pytorch-ood)")
class Mahalanobis(FeatureScorer):
    def fit_features(self, features, labels, state):
        d = _Mahalanobis(None).fit_features(features, labels)
        return {"mu": d.mu.cpu(), "precision": d.precision.cpu()}

    def _set_state(self, state):
        super()._set_state(state)
        self._detector = fitted_mahalanobis(state)

    def confidence(self, features, logits):
        d = self._detector
        d.mu, d.precision = d.mu.to(features.device), d.precision.to(features.device)
        return -d.predict_features(features)
