"""ASH, activation shaping (Djurisic, Bozanic, Ashok & Liu, ICLR 2023), post-hoc on the baseline's penultimate
features.

Per image, the lowest ``percentile`` fraction of the penultimate activations is set to zero; the kept ones are
left (ash-p), set to one value that keeps the sum (ash-b), or scaled by exp(s1 / s2) with s1, s2 the sums before
and after pruning (ash-s); the shaped features go through the real last layer and the logits are scored by energy.
Implementation: pytorch-ood's ``ASH`` (``predict_feature_maps``, bench's ``forward_head`` as the head, features
as (N, F, 1, 1) maps), sign flipped: confidence = logsumexp(head(ash(f))).

Defaults: ash-s at percentile 0.90, the paper's headline ImageNet setting (ASH-S@90) and OpenOOD's default
(configs/postprocessors/ash.yml). Nothing is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytorch_ood.detector import ASH as _ASH

from bench.methods.core.base import register
from bench.methods.core.features import FeatureMapDetector
from bench.methods.core.options import Options, option

VARIANTS = ("ash-s", "ash-p", "ash-b")


@dataclass(frozen=True)
class ASHConfig(Options):
    variant: str = option("ash-s", one_of=VARIANTS)  # Djurisic et al. 2023: ASH-S is their best variant
    percentile: float = option(0.90, ge=0, lt=1)  # fraction of activations pruned per image (ASH-S@90); 1: all


@register("ash", "Post-hoc: energy after pruning and rescaling penultimate activations (Djurisic et al. 2023; "
          "pytorch-ood)")
class ASH(FeatureMapDetector):
    Config = ASHConfig
    fits_on_train = False

    def build_detector(self, state):
        return _ASH(None, self.head_on, variant=self.config.variant, percentile=self.config.percentile)
