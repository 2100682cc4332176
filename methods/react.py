"""ReAct, rectified activations (Sun, Guo & Li, NeurIPS 2021), post-hoc on the baseline's penultimate features.

The penultimate activations are clipped at c = the p-th percentile of all training-split activations (units and
images together), the clipped features go through the real last layer, and the logits are scored by energy.
Implementation: pytorch-ood's ``ReAct`` (``fit_feature_maps`` for c, ``predict_feature_maps`` with bench's
``forward_head`` as the head; features passed as (N, F, 1, 1) maps), sign flipped:

    confidence = logsumexp(head(min(f, c)))

p = 90, the paper's default percentile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch_ood.detector import ReAct as _ReAct

from bench.methods.core.base import register
from bench.methods.core.features import FeatureMapDetector
from bench.methods.core.options import Options, option


@dataclass(frozen=True)
class ReActConfig(Options):
    percentile: float = option(0.90, gt=0, le=1)  # Sun et al. 2021: clip at the 90th percentile of ID activations


@register("react", "Post-hoc: energy of the logits of clipped penultimate activations (Sun et al. 2021; pytorch-ood)")
class ReAct(FeatureMapDetector):
    Config = ReActConfig

    def fit_features(self, features, labels, state):
        d = _ReAct(None, None, percentile=self.config.percentile).fit_feature_maps(features[:, :, None, None], labels)
        return {"threshold": torch.tensor(d.threshold, dtype=torch.float64)}

    def build_detector(self, state):
        return _ReAct(None, self.head_on, threshold=float(state["threshold"]))
