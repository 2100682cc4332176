"""SCALE (Xu, Chen, Franchi & Yao, ICLR 2024), post-hoc on the baseline's penultimate features.

Per image, the penultimate activations are all kept and multiplied by exp(s1 / s2), where s1 is their sum and s2
the sum of the top (1 - percentile) fraction; the scaled features go through the real last layer and the logits
are scored by energy. Implementation: pytorch-ood's ``SCALE`` (``predict_feature_maps``, bench's ``forward_head``
as the head, features as (N, F, 1, 1) maps), sign flipped: confidence = logsumexp(head(exp(s1 / s2) f)).

percentile = 0.85, the paper's ImageNet setting and OpenOOD's default (configs/postprocessors/scale.yml).
Nothing is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytorch_ood.detector import SCALE as _SCALE

from bench.methods.core.base import register
from bench.methods.core.features import FeatureMapDetector
from bench.methods.core.options import Options, option


@dataclass(frozen=True)
class SCALEConfig(Options):
    percentile: float = option(0.85, ge=0, lt=1)  # Xu et al. 2024; 1 would leave no activation for s2


@register("scale", "Post-hoc: energy after scaling penultimate activations by exp(sum / top sum) (Xu et al. 2024; "
          "pytorch-ood)")
class SCALE(FeatureMapDetector):
    Config = SCALEConfig
    fits_on_train = False

    def build_detector(self, state):
        return _SCALE(None, self.head_on, percentile=self.config.percentile)
