"""Max logit (Hendrycks et al., "Scaling out-of-distribution detection", ICML 2022) on the baseline logits.

Confidence = the largest unnormalised logit; probabilities are the plain softmax of the baseline.
"""

from __future__ import annotations

import torch

from bench.methods.core.base import ConfidenceMethod, Training, register


@register("maxlogit", "Post-hoc: largest logit of the baseline classifier (Hendrycks et al. 2022)")
class MaxLogit(ConfidenceMethod):
    training = Training.SHARED_BASELINE
    posthoc = True

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits.softmax(1), logits.max(1).values
