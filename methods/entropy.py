"""Predictive entropy of the baseline softmax, no retraining.

Confidence = -H(p) = sum_c p_c log p_c (computed from log-softmax, so it stays finite when a p_c underflows to
0); higher = more peaked = more trustworthy. Its maximum is 0 (one-hot), its minimum -ln C (uniform).
"""

from __future__ import annotations

import torch

from bench.methods.core.base import ConfidenceMethod, Training, register


@register("entropy", "Post-hoc: negative entropy of the baseline softmax")
class Entropy(ConfidenceMethod):
    training = Training.SHARED_BASELINE
    posthoc = True

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logp = logits.log_softmax(1)
        probs = logp.exp()
        return probs, (probs * logp).sum(1)
