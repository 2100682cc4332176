"""DOCTOR (Granese, Romanelli, Gorla, Palamidessi & Piantanida, NeurIPS 2021), post-hoc misclassification detector
on the baseline logits, its totally-black-box setting (softmax outputs only, no input perturbation).

With p = softmax(logits / T) and y_hat the predicted class, the paper rejects a prediction when a ratio exceeds a
threshold gamma:

    D_alpha:  (1 - g(x)) / g(x) > gamma,   g(x) = sum_y p_y^2       (1 - g is the Gini impurity of p)
    D_beta:   P_e(x) / (1 - P_e(x)) > gamma,   P_e(x) = 1 - p_{y_hat}  (= 1 - max p)

bench's confidence is the negative log of that ratio, log g - log(1 - g) (alpha) or log max p - log(1 - max p)
(beta): a strictly decreasing function of the paper's ratio, so every threshold test and every ranking metric is the
paper's, while confident predictions keep distinct scores (1 - g and 1 - max p are computed in log space from the
logits, so they never round to 0 in float; the ratio itself would be 0/1 for most MNIST test digits in float32).
D_beta ranks exactly as the MSP at the same temperature; the paper offers it for that reason as the MSP's ratio form.

Defaults: variant alpha, T = 1 (the paper's totally-black-box setting; its authors' CIFAR-10 files use T = 1,
eps = 0 there). The partially-black-box variant adds an ODIN-like input perturbation (the authors' CIFAR-10 files:
T = 1, eps = 0.00035 for alpha; T = 1.5, eps = 0.00035 for beta); it needs input gradients and is not offered here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods.base import ConfidenceMethod, Training, register
from bench.methods.options import Options, option


@dataclass(frozen=True)
class DoctorConfig(Options):
    variant: str = option("alpha", one_of=("alpha", "beta"))  # D_alpha (Gini) or D_beta (1 - max p)
    temperature: float = option(1.0, gt=0)  # softmax temperature; 1 in the paper's totally-black-box setting


def log_softmax_and_complement(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_j, log(1 - p_j)) of softmax(logits) in float64, exact where 1 - p_j is tiny: for the top class
    1 - p_top is the mass of the other classes, logsumexp(others) - logsumexp(all); log1p(-p) elsewhere (p <= 1/2)."""
    z = logits.double()
    lse = torch.logsumexp(z, dim=1, keepdim=True)
    log_p = z - lse
    top = z.argmax(1, keepdim=True)
    log_q_top = torch.logsumexp(z.scatter(1, top, float("-inf")), dim=1, keepdim=True) - lse
    log_q = torch.log1p(-log_p.exp().clamp(max=0.5))
    is_top = torch.zeros_like(z, dtype=torch.bool).scatter(1, top, True)
    return log_p, torch.where(is_top, log_q_top.expand_as(z), log_q)


def doctor_confidence(logits: torch.Tensor, variant: str, temperature: float) -> torch.Tensor:
    """-log of DOCTOR's rejection ratio (float64): higher = more trustworthy."""
    log_p, log_q = log_softmax_and_complement(logits.double() / temperature)
    if variant == "beta":
        top = log_p.argmax(1, keepdim=True)
        return (log_p.gather(1, top) - log_q.gather(1, top)).squeeze(1)
    log_g = torch.logsumexp(2 * log_p, dim=1)  # g = sum p^2
    log_one_minus_g = torch.logsumexp(log_p + log_q, dim=1)  # 1 - g = sum p (1 - p), as sum p = 1
    return log_g - log_one_minus_g


@register("doctor", "Post-hoc misclassification detector: DOCTOR's D_alpha (Gini) / D_beta ratio of the softmax "
          "(Granese et al. 2021)")
class Doctor(ConfidenceMethod):
    Config = DoctorConfig
    training = Training.SHARED_BASELINE
    posthoc = True

    def score_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conf = doctor_confidence(logits, self.config.variant, self.config.temperature)
        return logits.softmax(1), conf.float()
