"""ODIN (Liang, Li & Srikant, ICLR 2018) on the baseline classifier: temperature scaling plus input perturbation.

    x' = x - eps * sign(grad_x CE(f(x) / T, y_hat)),     confidence = max_c softmax(f(x') / T)_c

with y_hat the predicted class. It needs input gradients, so it is built against the classifier like an attack
(not a scorer of shared logits): per batch one forward and one backward pass for the perturbation and one forward
pass on x', plus the plain forward pass for the reported probabilities (those are the baseline's: ODIN changes the
confidence, not the prediction). Its cost shows in the cost table (infer_ms_per_1k, forward_passes = 3).
Implementation: pytorch-ood's ``ODIN`` (its ``predict`` returns -confidence), sign flipped.

T = 1000 and eps = 0.0014, the paper's defaults (its DenseNet/CIFAR-10 setting, also OpenOOD's). eps is in [0, 1]
pixel units, which is what bench feeds the model (normalisation is inside the model), so pytorch-ood's
``norm_std`` (for models fed normalised images) is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pytorch_ood.detector import ODIN as _ODIN

from bench.methods.core.base import ConfidenceMethod, Training, register
from bench.methods.core.options import Options, option


@dataclass(frozen=True)
class ODINConfig(Options):
    temperature: float = option(1000.0, gt=0)  # Liang et al. 2018
    # perturbation size in [0, 1] pixel units (Liang et al. 2018, CIFAR-10); at most 1, a step across the whole pixel
    # range (the paper's grid tops out at 0.004)
    eps: float = option(0.0014, ge=0, le=1)


@register("odin", "Temperature + input perturbation along the gradient of the max softmax (Liang et al. 2018; "
          "pytorch-ood)")
class ODIN(ConfidenceMethod):
    Config = ODINConfig
    training = Training.SHARED_BASELINE
    needs_grad = True

    @property
    def forward_passes(self) -> int:
        return 3  # plain forward, forward + backward for the perturbation, forward on the perturbed input

    def _predict_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model = self._fitted_model()
        with torch.no_grad():
            probs = model(x).softmax(1)
        detector = _ODIN(model, eps=self.config.eps, temperature=self.config.temperature)
        return probs, -detector.predict(x)
