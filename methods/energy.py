"""Energy score (Liu, Wang, Owens & Li, NeurIPS 2020) on the baseline logits, no retraining.

Confidence = -E(x) = T * logsumexp(logits / T) with T = 1 as in the paper's inference setting; higher = more
in-distribution / more trustworthy. Probabilities are the plain softmax of the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.core.base import ConfidenceMethod, Training, register
from bench.methods.core.options import Options, option


@dataclass(frozen=True)
class EnergyConfig(Options):
    temperature: float = option(1.0, gt=0)  # T of the energy; 1 as in Liu et al.


@register("energy", "Post-hoc: negative free energy T*logsumexp(logits/T) of the baseline logits (Liu et al. 2020)")
class Energy(ConfidenceMethod):
    Config = EnergyConfig
    training = Training.SHARED_BASELINE
    posthoc = True

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.config.temperature
        return logits.softmax(1), t * torch.logsumexp(logits / t, dim=1)
