"""Vector scaling (Guo, Pleiss, Sun & Weinberger, ICML 2017) of the baseline classifier's logits.

Probabilities become softmax(w * z + b), a scale w_k and a bias b_k per class (a diagonal matrix scaling), fitted on
the validation split by minimising the mean NLL with the classifier frozen; the confidence is their maximum. With
per-class scales and biases the argmax, hence the accuracy, can change (temperature scaling, w_k = 1/T and b = 0,
is the special case that keeps it). Fitted with matrix.py's ``fit_affine`` (L-BFGS, float64, from w = 1, b = 0);
w and b are stored in the checkpoint as W = diag(w), b.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.core.base import register
from bench.methods.core.options import Options, option
from bench.methods.matrix import LinearCalibrator, fit_affine


@dataclass(frozen=True)
class VectorConfig(Options):
    max_iter: int = option(500, ge=1)  # L-BFGS iterations


@register("vector", "Post-hoc calibration: vector scaling softmax(w * z + b), per-class scale and bias fitted on "
          "validation NLL (Guo et al. 2017)")
class VectorScaling(LinearCalibrator):
    Config = VectorConfig

    def _fit_map(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return fit_affine(x, labels, diagonal=True, max_iter=self.config.max_iter)

    @property
    def scales(self) -> torch.Tensor:
        """The per-class scales w (the diagonal of W)."""
        self.extra_state()  # raises if not fitted
        return torch.diagonal(self.weight)
