"""DOCTOR (Granese, Romanelli, Gorla, Palamidessi & Piantanida, NeurIPS 2021), post-hoc misclassification detector
on the baseline logits, its totally-black-box setting (softmax outputs only, no input perturbation).

With p = softmax(logits / T) and y_hat the predicted class, the paper rejects a prediction when a ratio exceeds a
threshold gamma:

    D_alpha:  (1 - g(x)) / g(x) > gamma,   g(x) = sum_y p_y^2       (1 - g is the Gini impurity of p)
    D_beta:   P_e(x) / (1 - P_e(x)) > gamma,   P_e(x) = 1 - p_{y_hat}  (= 1 - max p)

bench's confidence is the negative log of that ratio, log g - log(1 - g) (alpha) or log max p - log(1 - max p)
(beta): a strictly decreasing function of the paper's ratio, so every threshold test and every ranking metric is the
paper's, while confident predictions keep distinct scores (1 - max p is summed from the other classes' exp(z_j -
z_top) in float64, so 1 - g and 1 - max p do not round to 0; the ratio itself would be 0/1 for most MNIST test
digits in float32).
D_beta ranks exactly as the MSP at the same temperature; the paper offers it for that reason as the MSP's ratio form.

Defaults: variant alpha, T = 1 (the paper's totally-black-box setting; its authors' CIFAR-10 files use T = 1,
eps = 0 there). The partially-black-box variant adds an ODIN-like input perturbation (the authors' CIFAR-10 files:
T = 1, eps = 0.00035 for alpha; T = 1.5, eps = 0.00035 for beta); it needs input gradients and is not offered here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.core.base import ConfidenceMethod, Training, register
from bench.methods.core.options import Options, option


@dataclass(frozen=True)
class DoctorConfig(Options):
    variant: str = option("alpha", one_of=("alpha", "beta"))  # D_alpha (Gini) or D_beta (1 - max p)
    temperature: float = option(1.0, gt=0)  # softmax temperature; 1 in the paper's totally-black-box setting


def softmax_and_top_complement(logits: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(p, top class (N, 1), p_top, 1 - p_top) of softmax(logits) in float64, 1 - p_top exact where it is tiny: the
    mass of the other classes, summed from exp(z_j - z_top) instead of subtracting p_top from 1 (which rounds to 0
    once the logit gap exceeds ~37). Floored at the smallest positive double (a gap beyond ~745), so that its log
    stays finite."""
    z = logits.double()
    top = z.argmax(1, keepdim=True)
    e = (z - z.gather(1, top)).exp()  # the top class's entry is exactly 1
    rest = e.scatter(1, top, 0.0).sum(1)
    total = 1.0 + rest
    p = e / total[:, None]
    return p, top, 1.0 / total, (rest / total).clamp(min=torch.finfo(torch.float64).tiny)


def doctor_confidence(logits: torch.Tensor, variant: str, temperature: float) -> torch.Tensor:
    """-log of DOCTOR's rejection ratio (float64): higher = more trustworthy."""
    p, top, p_top, q_top = softmax_and_top_complement(logits.double() / temperature)
    if variant == "beta":
        return p_top.log() - q_top.log()
    g = (p * p).sum(1)
    # 1 - g = sum p (1 - p) (as sum p = 1): the top class's term with the exact 1 - p_top, the others (p <= 1/2)
    # as they are
    one_minus_g = (p * (1 - p)).scatter(1, top, 0.0).sum(1) + p_top * q_top
    return g.log() - one_minus_g.clamp(min=torch.finfo(torch.float64).tiny).log()


@register("doctor", "Post-hoc misclassification detector: DOCTOR's D_alpha (Gini) / D_beta ratio of the softmax "
          "(Granese et al. 2021)")
class Doctor(ConfidenceMethod):
    Config = DoctorConfig
    training = Training.SHARED_BASELINE
    posthoc = True

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conf = doctor_confidence(logits, self.config.variant, self.config.temperature)
        return logits.softmax(1), conf.float()
