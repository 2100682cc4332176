"""Relative Mahalanobis distance (Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan 2021), post-hoc on the
baseline's penultimate features.

As ``mahalanobis`` (class means, tied covariance, training split), plus one background Gaussian fitted to all
training features regardless of class; RMD_k(f) = MD_k(f) - MD_0(f) and the score is min_k RMD_k. Implementation:
pytorch-ood's ``RMD`` (``fit_features`` / ``predict_features``), sign flipped:

    confidence = -min_k [ (f - mu_k)^T S^-1 (f - mu_k) - (f - mu_0)^T S_0^-1 (f - mu_0) ]

with pytorch-ood's scatter matrices S (within class) and S_0 (around the global mean mu_0), each + 1e-6 I: the
paper's distances divided by N, the same ranking. No hyper-parameters.
"""

from __future__ import annotations

from pytorch_ood.detector import RMD as _RMD

from bench.methods.core.base import register
from bench.methods.core.features import FeatureScorer

KEYS = ("mu", "precision", "background_mu", "background_precision")


@register("rmd", "Post-hoc: relative Mahalanobis distance (class minus background Gaussian) on penultimate "
          "features (Ren et al. 2021; pytorch-ood)")
class RMD(FeatureScorer):
    def fit_features(self, features, labels, state):
        d = _RMD(None).fit_features(features, labels)
        return {k: getattr(d, k).cpu() for k in KEYS}

    def _set_state(self, state):
        super()._set_state(state)
        self._detector = _RMD(None)
        for k in KEYS:
            setattr(self._detector, k, state[k])

    def confidence(self, features, logits):
        d = self._detector
        for k in KEYS:
            setattr(d, k, getattr(d, k).to(features.device))
        return -d.predict_features(features)
